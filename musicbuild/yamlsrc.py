"""YAML loading that remembers where every value was written.

PyYAML's constructors drop source marks, so we compose the node graph ourselves and convert it,
recording ``path -> (line, col)`` (1-based) for every mapping key and sequence item. Duplicate
keys, which PyYAML silently lets the last one win, are reported as errors.

Before converting, the node graph is measured without expanding it: an alias that contains itself,
an anchor repeated into billions of values ("billion laughs") or nesting deeper than any manifest
needs is refused at once. A value PyYAML cannot construct (``!!float x``, an unknown ``!tag``, a
``<<`` merge of a number) is a located error, never an exception.
"""
from __future__ import annotations

import datetime
import re
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
    def __init__(self, line: int, col: int, message: str, path: Path_ = ()) -> None:
        super().__init__(message)
        self.line, self.col, self.message, self.path = line, col, message, path


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml(text: str, file: str, max_nodes: int = 2_000_000, max_depth: int = 64,
              shape: dict[str, int] | None = None) -> tuple[Any, SourceMap, list[tuple[Path_, str]]]:
    """Parse ``text``; return (data, source map, duplicate-key problems).

    ``max_nodes`` bounds the values the document expands to (an alias counts its anchor's values
    again every time it is used), ``max_depth`` the nesting of mappings and lists. ``shape``, if
    given, receives the document's ``size`` in those values (``fastload`` adds up entries)."""
    smap = SourceMap(file)
    problems: list[tuple[Path_, str]] = []
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        line, col, message = _explain_syntax(exc, text)
        raise YamlSyntaxError(line, col, f"invalid YAML: {message}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, e.g. a NUL byte
        before = text[: max(exc.position, 0)]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        raise YamlSyntaxError(line, col, f"invalid YAML: the character U+{exc.character:04X} is not allowed in "
                                         "YAML text; write it escaped inside double quotes (e.g. \"\\t\")") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, 1, "invalid YAML: " + " ".join(str(exc).split())) from None
    except RecursionError:  # the pure-Python composer (no libyaml) nests one call per level
        raise YamlSyntaxError(1, 1, f"the YAML is nested too deeply (more than {max_depth} levels)") from None
    if node is None:
        return None, smap, problems
    size = _check_shape(node, max_nodes, max_depth)
    if shape is not None:
        shape["size"] = size
    constructor = yaml.SafeLoader("")  # only its scalar resolution is used
    smap.locations[()] = (node.start_mark.line + 1, node.start_mark.column + 1)
    data = _convert(node, (), smap, problems, constructor, text)
    return data, smap, problems


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_shape(root: yaml.Node, max_nodes: int, max_depth: int) -> int:
    """Refuse a recursive alias, an expansion past ``max_nodes`` or nesting past ``max_depth``;
    return the number of values the document expands to.

    Iterative and memoised per node, so the cost is the size of the text, not of its expansion."""
    size: dict[int, int] = {}  # id(node) -> values it expands to
    height: dict[int, int] = {}  # id(node) -> nesting levels below it
    open_: set[int] = set()  # nodes whose children are being measured (the current path)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        kids = _children(node)
        if done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = (1 + max((height[id(k)] for k in kids), default=0)) if kids else 0
            if size[key] > max_nodes:
                _fail(node, f"this value expands to more than {max_nodes:,} values (every alias *name repeats "
                            "its anchor &name); write it out plainly, or raise MUSICBUILD_MAX_TRACKS for a really "
                            "big catalogue")
            if height[key] > max_depth:
                _fail(node, f"nested more than {max_depth} levels deep; a manifest needs a few levels")
            continue
        if key in size:
            continue
        open_.add(key)
        stack.append((node, True))
        for kid in kids:
            if id(kid) in open_:
                _fail(kid, "an alias (*name) inside the anchor it names (&name) repeats it forever; "
                           "refer to the anchor from outside it")
            if id(kid) not in size:
                stack.append((kid, False))
    return size[id(root)]


def _fail(node: yaml.Node, message: str, path: Path_ = ()) -> None:
    raise YamlSyntaxError(node.start_mark.line + 1, node.start_mark.column + 1, message, path)


_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_TAG_VALUES = {"int": "a whole number like 42", "float": "a number like 1.5", "bool": "true or false",
               "null": "empty (~ or null)", "timestamp": "a date like 2024-05-01", "str": "text"}


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def _construct(node: yaml.Node, ctor: Any, path: Path_) -> Any:
    """A scalar (or complex key) as Python data; dates keep their text, other odd values are errors."""
    tag = _short_tag(node.tag)
    try:
        value = ctor.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        if "could not determine a constructor" in str(exc.problem):
            mark = exc.problem_mark or node.start_mark
            raise YamlSyntaxError(mark.line + 1, mark.column + 1, _unknown_tag(tag), path) from None
        _fail(node, f"cannot read this value: {exc.problem}", path)
    except Exception as exc:  # ValueError, IndexError, binascii.Error...: PyYAML has no one error for this
        want = _TAG_VALUES.get(tag[2:])
        if want and isinstance(node, yaml.ScalarNode):
            _fail(node, f"{node.value!r} is not {want}, which the tag {tag} asks for; fix the value "
                        f"or remove the tag", path)
        _fail(node, f"cannot read this value: {exc}", path)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return node.value if isinstance(node, yaml.ScalarNode) else str(value)  # as written
    if isinstance(value, bytes):
        _fail(node, "binary data (!!binary) cannot be used in a manifest; write text", path)
    return value


def _unknown_tag(tag: str) -> str:
    return (f"unknown YAML tag '{tag}': manifests use plain YAML values; remove the tag, or quote "
            f"a value that starts with '!'")


def _convert(node: yaml.Node, path: Path_, smap: SourceMap, problems: list, ctor: Any, text: str) -> Any:
    template = _unquoted_template(node, text)
    if template is not None:
        problems.append((path, f"YAML reads the unquoted template {template} as a mapping; quote it: \"{template}\""))
        return template
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _COLLECTION_TAGS:
        tag = _short_tag(node.tag)
        _fail(node, _unknown_tag(tag) if not tag.startswith("!!") else
              f"the YAML tag {tag} is not supported in a manifest; write a plain mapping or list", path)
    if isinstance(node, yaml.MappingNode):
        try:
            ctor.flatten_mapping(node)  # resolves `<<` merge keys
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark or node.start_mark
            raise YamlSyntaxError(mark.line + 1, mark.column + 1,
                                  "a merge key (<<) takes a mapping or a list of mappings, usually an alias "
                                  "like '<<: *defaults'", path + ("<<",)) from None
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, ctor, path)
            key = str(key) if not isinstance(key, str) else key
            child = path + (key,)
            if key in out:
                first = smap.locations[child][0]
                problems.append((child, f"duplicate key '{key}': it is also set on line {first}, and YAML would "
                                        "silently keep only the last value; remove one"))
            smap.locations[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _convert(value_node, child, smap, problems, ctor, text)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = path + (i,)
            smap.locations[child] = (item.start_mark.line + 1, item.start_mark.column + 1)
            items.append(_convert(item, child, smap, problems, ctor, text))
        return items
    return _construct(node, ctor, path)


def _unquoted_template(node: yaml.Node, text: str) -> str | None:
    """``key: {{ name }}`` written without quotes: YAML sees a flow mapping inside a flow mapping."""
    if not (isinstance(node, yaml.MappingNode) and node.flow_style and len(node.value) == 1):
        return None
    inner, value = node.value[0]
    if not (isinstance(inner, yaml.MappingNode) and isinstance(value, yaml.ScalarNode) and value.value == ""):
        return None
    return text[node.start_mark.index:node.end_mark.index]


def _explain_syntax(exc: yaml.MarkedYAMLError, text: str) -> tuple[int, int, str]:
    """A PyYAML parse error as (line, col, message) a person can act on."""
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or str(exc)
    ctx = exc.context_mark
    ctx_at = f"line {ctx.line + 1}, column {ctx.column + 1}" if ctx else ""
    lines = text.splitlines()
    src = lines[line - 1] if 0 < line <= len(lines) else ""
    context = exc.context or ""
    if "\t" in src[: len(src) - len(src.lstrip())] or "tab" in problem:
        return line, col, "a tab is used for indentation; YAML indents with spaces only (replace it with spaces)"
    found = re.match(r"^[ \t]*(?:-[ \t]+)?([^:#]+):[ \t]+(\{\{.*?)[ \t]*$", src)
    if found:
        key, value = found.group(1).strip(), found.group(2)
        quoted = f"'{value}'" if '"' in value else f'"{value}"'
        return line, col, f"a value that starts with {{{{ must be quoted, or YAML reads it as a mapping: {key}: {quoted}"
    unquoted = _unquoted_template_in(src)
    if unquoted and ("flow" in context or "flow" in problem):
        key, value = unquoted
        return line, src.index(value) + 1, (f"the template {value} must be quoted inside {{ }} or [ ], or YAML "
                                            f"reads its braces as structure: {key}\"{value}\"")
    if "quoted scalar" in context and ctx:
        return ctx.line + 1, ctx.column + 1, "this quoted string is never closed (add the closing quote)"
    if ("flow sequence" in context or "flow mapping" in context) and ctx:
        closer = "]" if "sequence" in context else "}"
        return ctx.line + 1, ctx.column + 1, (f"this {'list' if closer == ']' else 'mapping'} is not closed: "
                                              f"add '{closer}' (and a ',' between items)")
    indentation = ("expected '-' indicator", "expected key", "<block end>", "mapping values are not allowed")
    if any(p in problem for p in indentation):
        levels = _open_levels([ln for ln in lines[: line - 1] if ln.strip() and not ln.lstrip().startswith("#")])
        mine = len(src) - len(src.lstrip(" "))
        if levels and mine not in levels:
            where = ", ".join(map(str, levels[:-1])) + (" or " if len(levels) > 1 else "") + str(levels[-1])
            return line, col, (f"bad indentation: this line is indented by {mine} space{'s' if mine != 1 else ''}, but the blocks above "
                               f"it are indented by {where}; line it up with the key it belongs next to")
    if "expected '-' indicator" in problem and ctx_at:
        return line, col, (f"bad indentation: items of the list that starts at {ctx_at} must begin with '- ' "
                           "(or indent this line further to belong to the item above)")
    if any(p in problem for p in indentation[1:3]):
        return line, col, "bad indentation: this line does not line up with the lines above it"
    if "mapping values are not allowed" in problem:
        return line, col, ("unexpected ':' here: quote a value that contains ': ', "
                           "or fix the indentation of this line")
    return line, col, f"{problem} ({context} at {ctx_at})" if context and ctx_at else problem


def _unquoted_template_in(src: str) -> tuple[str, str] | None:
    """(``key: `` or '', value) for the first plain (unquoted) scalar on ``src`` holding ``{{``."""
    blanked = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^']|'')*'", lambda m: "_" * len(m.group()), src)
    m = re.search(r"[^\s,\[\]{}:\"']*\{\{[^}]*\}\}[^\s,\]}]*", blanked)
    if not m:
        return None
    key = re.search(r"([\w.-]+):\s*$", blanked[: m.start()])
    return (f"{key.group(1)}: " if key else ""), src[m.start():m.end()]


def _open_levels(above: list[str]) -> list[int]:
    """Indentations a next line could line up with: the open blocks, innermost first."""
    levels: list[int] = []
    for ln in reversed(above):
        ind = len(ln) - len(ln.lstrip(" "))
        for level in ([ind + 2] if ln.lstrip(" ").startswith("- ") else []) + [ind]:
            if not levels or level < levels[-1]:
                levels.append(level)
        if levels and levels[-1] == 0:
            break
    return levels
