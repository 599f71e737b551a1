"""What the TFLite converter prints on the process's stderr, kept for an error message.

The converter's quantizer raises a bare `RuntimeError` when it rejects a
model: the reason ("'tfl.reshape' op quantization parameters violate the
same scale constraint", with the op's name) goes to file descriptor 2 from
C++, past Python's `sys.stderr`.
"""

import contextlib
import os
import sys
import threading


class ConverterLog:
    """The text written to file descriptor 2 inside `captured_stderr` (empty until it ends)."""

    text = ""

    def first_error(self, length=500):
        """The converter's first error line (naming the op where it has one), or "".

        Args:
            length: At most this many characters. Defaults to 500.

        Returns:
            A str.
        """
        lines = [line for line in self.text.splitlines() if "error:" in line]
        return lines[0].strip()[:length] if lines else ""


@contextlib.contextmanager
def captured_stderr():
    """Copies what is written to file descriptor 2 meanwhile into a `ConverterLog`.

    A thread relays it to the real stderr as it comes, so nothing the user
    would have seen is hidden or held back, not even by a native abort.

    Yields:
        The `ConverterLog`, its `text` set when the block ends.
    """
    log = ConverterLog()
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    chunks = []

    def relay():
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while data := pipe.read(65536):
                chunks.append(data)
                while data:
                    data = data[os.write(saved, data) :]

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield log
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the relay reads to its end
        thread.join()
        os.close(saved)
        log.text = b"".join(chunks).decode(errors="replace")
