"""Where each key of a TOML document is written: key path -> (line, column).

tomlkit keeps a document's text but not the positions of its keys, and the
error format is FILE:LINE:COL. This scans the source once, line by line,
following table headers ([a.b], [[a]] with its element index), dotted keys and
one-line inline tables, and records where every key path begins. It only has
to be right for documents tomlkit already accepted; lookups of paths it did not
see fall back to the nearest enclosing path that it did.
"""
from __future__ import annotations

import re

Path = tuple  # of str (keys) and int (array-of-tables indexes)

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY = rf"(?:{_BARE}|{_QUOTED})"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER_AOT = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]")
_HEADER = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]")
_KEYVAL = re.compile(rf"\s*({_DOTTED})\s*=")
_PART = re.compile(rf"{_KEY}")


def split_key(dotted: str) -> tuple[str, ...]:
    parts = []
    for m in _PART.finditer(dotted):
        tok = m.group(0)
        if tok[0] in "\"'":
            tok = tok[1:-1]
        parts.append(tok)
    return tuple(parts)


def _strip_strings(line: str) -> str:
    """LINE with string contents blanked and any comment removed (same length up to it)."""
    out, i, quote = [], 0, None
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\" and quote == '"':
                out.append("  ")
                i += 2
                continue
            if ch == quote:
                quote = None
            out.append(" " if quote else ch)
        elif ch in "\"'":
            quote = ch
            out.append(ch)
        elif ch == "#":
            break
        else:
            out.append(ch)
        i += 1
    return "".join(out)


class Locator:
    def __init__(self, text: str):
        self.positions: dict[Path, tuple[int, int]] = {}
        self._scan(text)

    def _record(self, path: Path, line: int, col: int) -> None:
        self.positions.setdefault(path, (line, col))

    def _scan(self, text: str) -> None:
        aot_count: dict[Path, int] = {}
        table: Path = ()
        depth = 0            # open [ / { across lines (multi-line arrays)
        in_ml = None         # inside a multi-line string: its delimiter
        for lineno, line in enumerate(text.splitlines(), start=1):
            if in_ml:
                if line.count(in_ml) % 2 == 1:
                    in_ml = None
                continue
            if depth > 0:
                clean = _strip_strings(line)
                depth += clean.count("[") + clean.count("{") - clean.count("]") - clean.count("}")
                depth = max(depth, 0)
                continue
            m = _HEADER_AOT.match(line)
            if m:
                parts = self._resolve(split_key(m.group(1)), aot_count)
                aot_count[parts] = aot_count.get(parts, 0) + 1
                table = parts + (aot_count[parts] - 1,)
                self._record(parts, lineno, m.start(1) + 1)
                self._record(table, lineno, m.start(1) + 1)
                continue
            m = _HEADER.match(line)
            if m:
                table = self._resolve(split_key(m.group(1)), aot_count)
                self._record(table, lineno, m.start(1) + 1)
                continue
            m = _KEYVAL.match(line)
            if not m:
                continue
            path = table + split_key(m.group(1))
            self._record(path, lineno, m.start(1) + 1)
            rest = line[m.end():]
            for delim in ('"""', "'''"):
                if rest.count(delim) % 2 == 1:
                    in_ml = delim
            if in_ml:
                continue
            clean = _strip_strings(rest)
            stripped = clean.lstrip()
            if stripped.startswith("{"):
                base = m.end() + (len(clean) - len(stripped))
                for im in re.finditer(rf"[{{,]\s*({_DOTTED})\s*=", rest[len(rest) - len(rest.lstrip()):]):
                    self._record(path + split_key(im.group(1)), lineno, base + im.start(1) + 1)
            depth = max(0, clean.count("[") + clean.count("{")
                        - clean.count("]") - clean.count("}"))

    @staticmethod
    def _resolve(parts: tuple[str, ...], aot_count: dict[Path, int]) -> Path:
        """Header key parts with the current index inserted after each array of tables."""
        out: list = []
        for p in parts:
            out.append(p)
            if tuple(out) in aot_count and len(out) < len(parts):
                out.append(aot_count[tuple(out)] - 1)
        return tuple(out)

    def find(self, path: Path) -> tuple[int, int]:
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return (1, 1)


def format_path(path: Path) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            needs_quote = not re.fullmatch(_BARE, p)
            part = f'"{p}"' if needs_quote else p
            out += part if not out else f".{part}"
    return out
