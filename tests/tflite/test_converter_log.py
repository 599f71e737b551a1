"""The converter's reason for rejecting a model, read from file descriptor 2."""

import os
import time

from keras_qat.tflite.converter_log import captured_stderr


def test_what_native_code_writes_to_stderr_is_kept_and_passed_on(capfd):
    with captured_stderr() as log:
        os.write(2, b"fully_quantize: 0\n")
        os.write(2, b"loc(\"model/flatten/Reshape\"): error: 'tfl.reshape' op violates\n")
        os.write(2, b"E0000 later: error: the same again\n")
    assert log.first_error() == "loc(\"model/flatten/Reshape\"): error: 'tfl.reshape' op violates"
    assert "fully_quantize: 0" in capfd.readouterr().err  # still shown to the user


def test_no_error_line_gives_an_empty_reason():
    with captured_stderr() as log:
        os.write(2, b"INFO: nothing wrong\n")
    assert log.first_error() == ""


def test_stderr_reaches_the_user_while_the_block_runs(capfd):
    # A native abort inside the block must not take the converter's last lines with it.
    with captured_stderr():
        os.write(2, b"error: about to abort\n")
        seen = ""
        for _ in range(200):
            seen += capfd.readouterr().err
            if "about to abort" in seen:
                break
            time.sleep(0.01)
    assert "about to abort" in seen
