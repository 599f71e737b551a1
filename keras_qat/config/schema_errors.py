"""Turning JSON Schema violations into keras_qat's error messages.

jsonschema finds what is wrong; this module words it the keras_qat way:
`<where>: <key path> must be <what>. Received: <key>=<value>`, with a
"did you mean" for near misses.
"""

import difflib
import json

import jsonschema

_TYPE_WORDS = {
    "boolean": "a boolean (true or false)",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "object": "an object",
    "array": "a list",
}


def show(value):
    """Returns `value` as the user wrote it in JSON (strings keep their quotes).

    Args:
        value: A value from the config.

    Returns:
        Its JSON text, or its repr when it is not JSON-serialisable.
    """
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def did_you_mean(word, candidates):
    """Returns " Did you mean 'x'?" for the closest candidate, or "".

    Args:
        word: What the user wrote.
        candidates: The valid spellings.

    Returns:
        The hint sentence, with a leading space, or an empty string.
    """
    if not isinstance(word, str):
        return ""
    folded = {c.lower(): c for c in candidates}
    match = folded.get(word.lower()) or next(
        iter(difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)), None
    )
    return f" Did you mean '{match}'?" if match else ""


def _message(error, dotted, key):
    value, expected = error.instance, error.validator_value
    received = f"Received: {key}={show(value)}"
    what = dotted or "The config"
    match error.validator:
        case "type":
            return f"{what} must be {_TYPE_WORDS.get(expected, expected)}. {received}"
        case "enum":
            options = ", ".join(f"'{o}'" for o in expected)
            return f"{what} must be one of {options}.{did_you_mean(value, expected)} {received}"
        case "const":
            return f"{what} must be {show(expected)}. {received}"
        case "minimum":
            return f"{what} must be >= {expected}. {received}"
        case "exclusiveMinimum":
            return f"{what} must be > {expected}. {received}"
        case "exclusiveMaximum":
            return f"{what} must be < {expected}. {received}"
    return f"{what}: {error.message}. {received}"


def schema_errors(instance, schema, describe):
    """Validates `instance` against `schema` and words every violation.

    Args:
        instance: The parsed JSON document.
        schema: A JSON Schema (draft 2020-12).
        describe: Maps a key path (list) to `(prefix, dotted)`: the message
            prefix (e.g. "Layer 'conv2d': ") and the dotted key path shown.

    Returns:
        A list of messages, sorted by location; empty when the instance is valid.
    """
    validator = jsonschema.Draft202012Validator(schema)
    messages = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path]):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":
            known = list(error.schema.get("properties", {}))
            for key in error.instance:
                if key not in known:
                    prefix, dotted = describe([*path, key])
                    hint = did_you_mean(key, known)
                    valid = ", ".join(known)
                    messages.append(
                        f"{prefix}unknown key {dotted}.{hint} Valid keys: {valid}. "
                        f"Received: {key}={show(error.instance[key])}"
                    )
            continue
        prefix, dotted = describe(path)
        key = str(path[-1]) if path else "config"
        messages.append(prefix + _message(error, dotted, key))
    return messages
