"""YAML loading that remembers where every value was written.

PyYAML's constructors drop source marks, so we compose the node graph ourselves and convert it,
recording ``path -> (line, col)`` (1-based) for every mapping key and sequence item. Duplicate
keys, which PyYAML silently lets the last one win, are reported as errors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

try:  # the C composer is several times faster on large manifests
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader

Path_ = tuple[str | int, ...]


@dataclass
class SourceMap:
    file: str
    locations: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_) -> tuple[int, int]:
        """The position of ``path``, or of its nearest ancestor that was written."""
        p = tuple(path)
        while p:
            if p in self.locations:
                return self.locations[p]
            p = p[:-1]
        return self.locations.get((), (1, 1))


class YamlSyntaxError(Exception):
    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(message)
        self.line, self.col, self.message = line, col, message


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml(text: str, file: str) -> tuple[Any, SourceMap, list[tuple[Path_, str]]]:
    """Parse ``text``; return (data, source map, duplicate-key problems)."""
    smap = SourceMap(file)
    problems: list[tuple[Path_, str]] = []
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSyntaxError(line, col, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, 1, f"invalid YAML: {exc}") from None
    if node is None:
        return None, smap, problems
    constructor = yaml.SafeLoader("")  # only its scalar resolution is used
    smap.locations[()] = (node.start_mark.line + 1, node.start_mark.column + 1)
    data = _convert(node, (), smap, problems, constructor)
    return data, smap, problems


def _convert(node: yaml.Node, path: Path_, smap: SourceMap, problems: list, ctor: Any) -> Any:
    if isinstance(node, yaml.MappingNode):
        ctor.flatten_mapping(node)  # resolves `<<` merge keys
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node, deep=True)
            key = str(key) if not isinstance(key, str) else key
            child = path + (key,)
            if key in out:
                problems.append((child, f"duplicate key '{key}' (first one is ignored by YAML; remove one)"))
            smap.locations[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _convert(value_node, child, smap, problems, ctor)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = path + (i,)
            smap.locations[child] = (item.start_mark.line + 1, item.start_mark.column + 1)
            items.append(_convert(item, child, smap, problems, ctor))
        return items
    return ctor.construct_object(node, deep=True)
