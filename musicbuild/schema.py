"""The manifest JSON Schema and its validation, with errors turned into located diagnostics."""
from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

from .yamlsrc import Path_, format_path

_TEMPLATE_HINT = "a template ({{ ... }})"
FORMATS = ("mp3", "wav", "flac", "ogg", "m4a")
# What people write for a format we do support.
_FORMAT_ALIASES = {"mp4": "m4a", "aac": "m4a", "m4b": "m4a", "alac": "m4a", "wave": "wav", "aif": "wav",
                   "aiff": "wav", "oga": "ogg", "vorbis": "ogg", "mpeg": "mp3", "mp2": "mp3", "fla": "flac"}
_REQUIRED_HINTS = {
    "version": "add 'version: 1' at the top (1 is the only manifest version)",
    "tracks": "add a 'tracks:' list with at least one track",
    "id": "every track needs an id (letters, digits, '.', '_' and '-')",
    "type": "say which service this is: one of local, aigateway, verbatik, sonauto, beatra",
}
_NUMBER_FIELDS = {
    "duration": "a number of seconds > 0 (e.g. 30)",
    "bpm": "a tempo between 20 and 400 beats per minute",
    "seed": "a whole number from 0 to 4294967295 (leave it out for a stable seed derived from the id)",
}


@lru_cache(maxsize=1)
def schema_text() -> str:
    return resources.files("musicbuild").joinpath("schemas/manifest.schema.json").read_text("utf-8")


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(schema_text()))


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def format_hint(value: str) -> str:
    """' (did you mean ...?)' for a format we do not write."""
    alias = _FORMAT_ALIASES.get(value.lower().lstrip("."))
    return f" (did you mean '{alias}'?)" if alias else did_you_mean(value.lower(), FORMATS)


def seconds_hint(value: str) -> str:
    """' (did you mean 150?)' for durations written with units: '2m30s', '30s', '1:30'."""
    text = value.strip().lower()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)\s*m(?:in)?\s*)?(?:(\d+(?:\.\d+)?)\s*s(?:ec(?:onds?)?)?)?", text)
    clock = re.fullmatch(r"(\d+):([0-5]\d(?:\.\d+)?)", text)
    if clock:
        seconds = int(clock.group(1)) * 60 + float(clock.group(2))
    elif m and text and (m.group(1) or m.group(2)):
        seconds = float(m.group(1) or 0) * 60 + float(m.group(2) or 0)
    else:
        return ""
    return f" (durations are plain seconds: did you mean {seconds:g}?)"


def validate(data: Any) -> list[tuple[Path_, str]]:
    """Return ``(path, message)`` for every schema violation, most specific first."""
    problems: list[tuple[Path_, str]] = []
    for error in _validator().iter_errors(data):
        problems.extend(_explain(error, data))
    providers = data.get("providers") if isinstance(data, dict) else None
    for name, cfg in (providers.items() if isinstance(providers, dict) else ()):
        if isinstance(cfg, dict) and _looks_like_secret(cfg.get("api_key_env")):
            problems.append((("providers", name, "api_key_env"), api_key_env_message(cfg)))
    # `trakcs: ...` already says "did you mean 'tracks'?"; "missing 'tracks'" would only repeat it
    hinted = {p[:-1] + (m.split("'")[3],) for p, m in problems if m.startswith("unknown field") and "did you mean" in m}
    return [(p, m) for p, m in problems if not (m.startswith("missing:") and p in hinted)]


def validate_against(subschema: Any, data: Any) -> list[tuple[Path_, str]]:
    """``data`` checked against another schema (a provider's option schema, a rendered ``post:``
    block), with the messages manifest errors use; paths are relative to ``data``."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(subschema)
    return [problem for error in validator.iter_errors(data) for problem in _explain(error, data)]


def _explain(error: Any, data: Any) -> list[tuple[Path_, str]]:
    path: Path_ = tuple(error.absolute_path)
    field = path[-1] if path and isinstance(path[-1], str) else None
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        if isinstance(error.schema.get("additionalProperties"), dict):
            return []  # a value schema, not a closed object; sub-errors cover it
        return [(path + (k,), f"unknown field '{k}'{did_you_mean(k, allowed) or '; allowed: ' + ', '.join(allowed)}")
                for k in extras]
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [(path + (missing,), f"missing: {_REQUIRED_HINTS.get(missing, 'this field is required')}")]
    if v in ("anyOf", "oneOf"):
        if field == "format" and isinstance(error.instance, str):
            return [(path, f"unknown format {error.instance!r}{format_hint(error.instance)}; "
                           f"must be one of {', '.join(FORMATS)}, or a template ({{{{ ... }}}})")]
        if field in _NUMBER_FIELDS:
            hint = seconds_hint(error.instance) if field == "duration" and isinstance(error.instance, str) else ""
            return [(path, f"must be {_NUMBER_FIELDS[field]}, or a template ({{{{ ... }}}}), "
                           f"not {_show(error.instance)}{hint}")]
        return [(path, f"must be {_describe(error.schema)}, not {_show(error.instance)}")]
    if v == "enum":
        choices = error.validator_value
        hint = did_you_mean(str(error.instance), [str(c) for c in choices])
        return [(path, f"must be one of {', '.join(map(str, choices))}, not {_show(error.instance)}{hint}")]
    if v == "const" and path == ("version",):
        if str(error.instance) == str(error.validator_value):
            return [(path, f"must be the number {error.validator_value}, not the string {_show(error.instance)} "
                           "(remove the quotes)")]
        return [(path, f"unsupported manifest version {_show(error.instance)}; this musicbuild reads version "
                       f"{error.validator_value}")]
    if v == "const":
        return [(path, f"must be {error.validator_value!r}, not {_show(error.instance)}")]
    if v == "type" and len(path) == 4 and path[2] == "matrix":
        if field == "exclude":
            return [(path, f"must be a list of mappings, e.g. exclude: [{{{field_example(data, path)}}}], "
                           f"not {_show(error.instance)}")]
        return [(path, f"must be a list of values, e.g. {field}: [{error.instance}], not {_show(error.instance)}")]
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return [(path, f"must be {_article(want)}, not {_show(error.instance)}")]
    if v == "pattern" and field == "api_key_env":
        return [(path, api_key_env_message(_lookup(data, path[:-1])))]
    if v == "propertyNames":
        return [(path, f"provider name {_show(error.instance)} must start with a letter and use letters, digits, - or _")]
    if v in ("minimum", "exclusiveMinimum"):
        op = ">=" if v == "minimum" else ">"
        return [(path, f"must be {op} {error.validator_value}, not {_show(error.instance)}")]
    if v in ("minItems", "minProperties"):
        return [(path, "must not be empty")]
    return [(path, error.message)]


_KEY_PREFIX = re.compile(r"^(sk|pk|rk|key|api|ghp|gho|xox[abprs])[-_]", re.I)


def _looks_like_secret(value: Any) -> bool:
    """A valid variable name that reads like a pasted key (sk_live_...); the schema pattern takes the rest."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return False
    if value.isupper() or not any(c.isdigit() for c in value):
        return False
    return bool(_KEY_PREFIX.match(value)) or (len(value) >= 24 and "_" not in value.strip("_"))


def api_key_env_message(provider: Any) -> str:
    """For an ``api_key_env`` that holds a key, not a variable name. Never repeats the value."""
    from .providers.catalog import TYPES

    ptype = TYPES.get(provider.get("type", "")) if isinstance(provider, dict) else None
    example = ptype.api_key_env if ptype and ptype.api_key_env else "MY_SERVICE_API_KEY"
    return (f"must be the NAME of an environment variable, not the key itself: put the key in {example} "
            f"and write api_key_env: {example} (revoke the key if this file was shared)")


def field_example(data: Any, path: Path_) -> str:
    """``var: value`` from the first axis of the matrix at ``path[:-1]``, for an exclude example."""
    matrix = _lookup(data, path[:-1])
    for k, values in (matrix.items() if isinstance(matrix, dict) else ()):
        if k != "exclude" and isinstance(values, list) and values:
            return f"{k}: {values[0]}"
    return "var: value"


def _lookup(data: Any, path: Path_) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _describe(schema: dict) -> str:
    parts = []
    for sub in schema.get("anyOf") or schema.get("oneOf") or []:
        if sub.get("pattern"):
            parts.append(_TEMPLATE_HINT)
        elif "enum" in sub:
            parts.append("one of " + ", ".join(map(str, sub["enum"])))
        elif sub.get("type") == "array":
            parts.append("a list of strings")
        else:
            t = sub.get("type", "value")
            bound = ""
            if "exclusiveMinimum" in sub:
                bound = f" > {sub['exclusiveMinimum']}"
            elif "minimum" in sub:
                bound = f" >= {sub['minimum']}"
            parts.append(_article(t) + bound)
    return " or ".join(parts) or "valid"


def _article(t: str) -> str:
    return {"object": "a mapping", "array": "a list", "integer": "an integer", "string": "a string",
            "number": "a number", "boolean": "true or false", "null": "empty"}.get(t, t)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


__all__ = ["schema_text", "validate", "did_you_mean", "format_path"]
