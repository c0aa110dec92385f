"""Cut a manifest's text into its head and one piece of text per ``tracks:`` entry, without parsing.

The edit loop (issue 11) re-reads only the entries whose text changed; this finds them. It accepts
only the plain layout (a top-level ``tracks:`` line, then block items ``- ...`` at one indentation,
each item's other lines indented deeper) and declines anything else (tabs in indentation, a flow
list, a second ``tracks:``), so the caller takes the full path. Whether an entry really means on its
own what it means in the document (no alias to an anchor elsewhere, no quote left open) is proven
by parsing it alone (``fastload.py``), never assumed here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_TRACKS_LINE = re.compile(r"^tracks:[ ]*(?:#.*)?$")
_ITEM = re.compile(r"^( *)-(?: |$)")


@dataclass(frozen=True)
class Split:
    head: str  # the document with its tracks replaced by `tracks: []` (line numbers are not kept)
    items: tuple[str, ...]  # the text of each entry, from its `- ` line to the next one
    indent: int  # the entries' indentation


def split_tracks(text: str) -> Split | None:
    """The head and entries of ``text``, or None if its layout is not the plain one."""
    lines = text.split("\n")
    starts = [n for n, line in enumerate(lines) if line.startswith("tracks:") and _TRACKS_LINE.match(line)]
    if len(starts) != 1:
        return None
    first = starts[0] + 1
    indent: int | None = None
    items: list[list[str]] = []
    end = len(lines)
    for n in range(first, len(lines)):
        line = lines[n]
        stripped = line.lstrip(" ")
        if "\t" in line[: len(line) - len(line.lstrip(" \t"))]:
            return None  # YAML forbids tabs in indentation: let the full parser say so
        if not stripped or stripped.startswith("#"):
            if items:
                items[-1].append(line)
            elif indent is None and stripped and len(line) == len(stripped):
                continue  # a comment at column 0 between `tracks:` and the first entry
            continue
        depth = len(line) - len(stripped)
        item = _ITEM.match(line)
        if indent is None:
            if item is None:
                return None  # `tracks:` followed by something other than a block list
            indent = depth
        if item is not None and depth == indent:
            items.append([line])
        elif depth > indent and items:
            items[-1].append(line)
        elif depth == 0:
            end = n  # the next top-level key: the rest belongs to the head
            break
        else:
            return None
    if not items:
        return None
    if end < len(lines):  # trailing blank/comment lines before the next key stay with the last item
        while items[-1] and not items[-1][-1].strip():
            items[-1].pop()
    head = "\n".join(lines[: first - 1] + ["tracks: []"] + lines[end:])
    return Split(head, tuple("\n".join(item) + "\n" for item in items), indent or 0)
