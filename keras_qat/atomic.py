"""Writing files and directories so that nobody ever sees half of one.

The content goes to a temporary sibling first and is renamed over the target
only when complete; a user's existing file is replaced only when asked.
"""

import os
import shutil
import tempfile


def refuse_existing(path, overwrite):
    """Raises FileExistsError when `path` exists and may not be replaced.

    Args:
        path: The destination.
        overwrite: Whether replacing it is allowed.
    """
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path} already exists and may hold your work; keras_qat does not overwrite it. "
            "Choose another path, delete it, or pass overwrite=True (CLI: --force)."
        )


def _file_mode(path):
    # mkstemp creates 0600; keep an existing file's mode, else honour the umask.
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_file_atomic(path, data, overwrite=False):
    """Writes `data` (bytes or str) to `path` atomically.

    Args:
        path: Destination file.
        data: The whole content.
        overwrite: Replace an existing file. Defaults to `False`.

    Raises:
        FileExistsError: if `path` exists and `overwrite` is False.
    """
    path = os.fspath(path)
    refuse_existing(path, overwrite)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_dir_atomic(path, fill, overwrite=False):
    """Creates directory `path` by letting `fill(tmp_dir)` write a temporary sibling.

    Args:
        path: Destination directory.
        fill: Called with the temporary directory's path; writes the content.
        overwrite: Replace an existing directory. Defaults to `False`.

    Raises:
        FileExistsError: if `path` exists and `overwrite` is False.
    """
    path = os.path.abspath(os.fspath(path))
    refuse_existing(path, overwrite)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    try:
        fill(tmp)
        if os.path.exists(path):
            old = tmp + ".old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
