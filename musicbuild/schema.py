"""The manifest JSON Schema and its validation, with errors turned into located diagnostics."""
from __future__ import annotations

import difflib
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from .yamlsrc import Path_, format_path

_TEMPLATE_HINT = "a template ({{ ... }})"


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


def validate(data: Any) -> list[tuple[Path_, str]]:
    """Return ``(path, message)`` for every schema violation, most specific first."""
    problems: list[tuple[Path_, str]] = []
    for error in _validator().iter_errors(data):
        problems.extend(_explain(error))
    return problems


def _explain(error: Any) -> list[tuple[Path_, str]]:
    path: Path_ = tuple(error.absolute_path)
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        if isinstance(error.schema.get("additionalProperties"), dict):
            return []  # a value schema, not a closed object; sub-errors cover it
        return [(path + (k,), f"unknown field '{k}'{did_you_mean(k, allowed)}") for k in extras]
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [(path, f"missing required field '{missing}'")]
    if v in ("anyOf", "oneOf"):
        return [(path, f"must be {_describe(error.schema)}, not {_show(error.instance)}")]
    if v == "enum":
        choices = error.validator_value
        hint = did_you_mean(str(error.instance), [str(c) for c in choices])
        return [(path, f"must be one of {', '.join(map(str, choices))}, not {_show(error.instance)}{hint}")]
    if v == "const":
        return [(path, f"must be {error.validator_value!r}, not {_show(error.instance)}")]
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return [(path, f"must be {_article(want)}, not {_show(error.instance)}")]
    if v == "pattern" and path and path[-1] == "api_key_env":
        return [(path, "must be the NAME of an environment variable (letters, digits, _), not the key itself")]
    if v == "propertyNames":
        return [(path, f"provider name {_show(error.instance)} must start with a letter and use letters, digits, - or _")]
    if v in ("minimum", "exclusiveMinimum"):
        op = ">=" if v == "minimum" else ">"
        return [(path, f"must be {op} {error.validator_value}, not {_show(error.instance)}")]
    if v in ("minItems", "minProperties"):
        return [(path, "must not be empty")]
    return [(path, error.message)]


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
