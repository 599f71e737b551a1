"""Reading JSON strictly and writing it atomically.

Strict: duplicate keys and NaN/Infinity are errors (Python's json module
silently keeps the last duplicate and accepts NaN). Atomic: see `atomic`.
"""

import json
import os
import re

from keras_qat.atomic import write_file_atomic
from keras_qat.errors import ConfigError


class _DuplicateKeyError(ValueError):
    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _reject_duplicates(pairs):
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKeyError(key)
        seen.add(key)
    return dict(pairs)


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _position(text, index):
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _second_occurrence(text, key):
    pattern = re.compile(re.escape(json.dumps(key)) + r"\s*:")
    matches = list(pattern.finditer(text))
    return matches[1].start() if len(matches) > 1 else None


def parse_json(text, source):
    """Parses JSON text, rejecting duplicate keys and non-finite numbers.

    Args:
        text: The JSON document.
        source: How to name the document in errors (usually its path).

    Returns:
        The parsed document.

    Raises:
        ConfigError: on a syntax error (with line and column) or duplicate key.
    """
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{source}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    except _DuplicateKeyError as e:
        index = _second_occurrence(text, e.key)
        where = " at line {}, column {}".format(*_position(text, index)) if index else ""
        raise ConfigError(
            f"{source}: duplicate key '{e.key}'{where}; each key may appear once per object."
        ) from None
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: JSON nested too deeply to be a retrain config.") from None


def read_json(path):
    """Reads and strictly parses a JSON file.

    Args:
        path: The file's path.

    Returns:
        The parsed document.

    Raises:
        ConfigError: if the file cannot be read or is not valid JSON.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the file: {e}") from None
    return parse_json(text, os.fspath(path))


def write_json_atomic(path, document, overwrite=False):
    """Writes `document` as indented JSON to `path`, atomically.

    Args:
        path: Destination file.
        document: A JSON-serialisable object.
        overwrite: Replace an existing file. Defaults to `False`.

    Raises:
        FileExistsError: if `path` exists and `overwrite` is False.
    """
    write_file_atomic(path, json.dumps(document, indent=4) + "\n", overwrite=overwrite)
