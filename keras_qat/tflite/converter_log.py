"""What the TFLite converter prints on the process's stderr, kept for an error message.

The converter's quantizer raises a bare `RuntimeError` when it rejects a
model: the reason ("'tfl.reshape' op quantization parameters violate the
same scale constraint", with the op's name) goes to file descriptor 2 from
C++, past Python's `sys.stderr`.
"""

import contextlib
import os
import sys
import tempfile


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

    The text is written on to the real stderr afterwards, so nothing the user
    would have seen is hidden.

    Yields:
        The `ConverterLog`, its `text` set when the block ends.
    """
    log = ConverterLog()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield log
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            data = capture.read()
            log.text = data.decode(errors="replace")
            os.write(2, data)
