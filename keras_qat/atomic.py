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


def check_writable(path, overwrite):
    """Raises unless `path` may be written: its directory exists, and it is new or may go.

    Args:
        path: The destination.
        overwrite: Whether replacing it is allowed.

    Raises:
        FileNotFoundError: if the parent directory does not exist.
        FileExistsError: if `path` exists and `overwrite` is False.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"cannot write {path}: directory {directory} does not exist. Create it first."
        )
    refuse_existing(path, overwrite)


def _file_mode(path):
    # mkstemp creates 0600; keep an existing file's mode, else honour the umask.
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_temporary(path, data):
    """Writes `data` to a new temporary sibling of `path`; returns its name."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_file_atomic(path, data, overwrite=False):
    """Writes `data` (bytes or str) to `path` atomically.

    Args:
        path: Destination file.
        data: The whole content.
        overwrite: Replace an existing file. Defaults to `False`.

    Raises:
        FileExistsError: if `path` exists and `overwrite` is False.
        FileNotFoundError: if the parent directory does not exist.
    """
    write_files_atomic({path: data}, overwrite)


def write_files_atomic(contents, overwrite=False):
    """Writes several files so that they are all replaced or none is.

    Every content goes to a temporary sibling first; then the existing files
    are moved aside, the new ones moved in, and the old ones deleted. A
    failure on the way puts every old file back.

    Args:
        contents: Destination path -> content (bytes or str).
        overwrite: Replace existing files. Defaults to `False`.

    Raises:
        FileExistsError: if a path exists and `overwrite` is False.
        FileNotFoundError: if a parent directory does not exist.
    """
    paths = [os.fspath(path) for path in contents]
    for path in paths:
        check_writable(path, overwrite)
    temporaries = {}
    moved_aside, placed = {}, []
    try:
        for path, data in zip(paths, contents.values(), strict=True):
            temporaries[path] = _write_temporary(path, data)
        for path in paths:
            if os.path.exists(path):
                old = temporaries[path] + ".old"
                os.replace(path, old)
                moved_aside[path] = old
            os.replace(temporaries[path], path)
            del temporaries[path]
            placed.append(path)
    except BaseException:
        for tmp in temporaries.values():
            os.unlink(tmp)
        for path in placed:
            os.unlink(path)
        for path, old in moved_aside.items():
            os.replace(old, path)
        raise
    for old in moved_aside.values():
        _remove(old)


def _remove(path):
    """Deletes a file, a symbolic link or a directory tree."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def write_dir_atomic(path, fill, overwrite=False):
    """Creates directory `path` by letting `fill(tmp_dir)` write a temporary sibling.

    Args:
        path: Destination directory.
        fill: Called with the temporary directory's path; writes the content.
        overwrite: Replace an existing directory. Defaults to `False`.

    Raises:
        FileExistsError: if `path` exists and `overwrite` is False.
        FileNotFoundError: if the parent directory does not exist.
    """
    path = os.path.abspath(os.fspath(path))
    check_writable(path, overwrite)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    try:
        os.chmod(tmp, _directory_mode())  # mkdtemp creates 0700
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not os.path.lexists(path):
        os.replace(tmp, path)
        return
    old = tmp + ".old"
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # The replaced entry may be a directory, a link or, when asked for, a file.
    _remove(old)


def _directory_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask
