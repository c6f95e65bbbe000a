"""Splitting a report body into its entries, so that no entry can crash the process.

A report is `{"Report_Entry": [ {...}, ... ]}`. A hostile or broken entry must cost only
itself: a 5,000-digit integer made ijson's C backend segfault, and deep nesting made its
prefix strings grow with depth squared (gigabytes for a 60 KB report). So the body is walked
here instead, byte-level but with regular expressions jumping from one structural character
to the next: strings are skipped, brackets counted, and each entry's bytes are cut out and
decoded on their own by the standard library's `json` (exact `Decimal` amounts, an integer over
Python's conversion limit a clean ValueError). An entry nested deeper than MAX_DEPTH or larger
than MAX_ENTRY_BYTES is never held or decoded: it comes out as `Unreadable` with the reason,
and the entries after it go on. Memory is bounded by the largest entry kept.

What breaks the report's own structure (a truncated body, a missing comma between entries,
trailing text) still ends the whole report: where the next entry starts is no longer known.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Protocol

from raasctl.sources.base import Unreadable

MAX_DEPTH = 64  # nesting levels inside one entry (the entry's own braces are level 1)
MAX_ENTRY_BYTES = 8 * 1024 * 1024  # far above any real entry; SQS messages stop at 1 MiB
READ_BYTES = 64 * 1024
# One decoder for every entry; amounts keep their exact digits.
_DECODER = json.JSONDecoder(parse_float=Decimal)

_NOT_WHITESPACE = re.compile(rb"[^ \t\r\n]")
# Inside a container: a whole string (skipped), a bracket, or a lone quote (a string that
# goes on past the bytes read so far). Unrolled and possessive, so matching stays linear
# whatever the input (no backtracking).
_STRING = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_TOKEN = re.compile(_STRING + rb'|[\[\]{}]|"', re.DOTALL)
_FLAT_OBJECT = re.compile(rb'\{(?:[^"{}\[\]]++|' + _STRING + rb")*+\}", re.DOTALL)
_SEPARATOR = re.compile(rb"[ \t\r\n]*+([,\]])[ \t\r\n]*+")
_OPENING = (b"{", b"[")
_CLOSING = (b"}", b"]")
_STRING_STOP = re.compile(rb'["\\]')
_SCALAR_END = re.compile(rb"[,\]} \t\r\n]")


class ReportSyntaxError(ValueError):
    """The report's own structure is broken: no later entry can be found."""


class ReportShapeError(ValueError):
    """Valid JSON, but not a report."""


class _Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...


class _Window:
    """The unread bytes of a stream: `buf[pos:]`. Bytes before `pos` (or before `mark`, the
    start of a value being kept) are dropped whenever more are read."""

    def __init__(self, stream: _Readable) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.pos = 0
        self.mark: int | None = None
        self.eof = False

    def more(self) -> bool:
        """Read on; False at the end of the body."""
        if self.eof:
            return False
        keep_from = self.pos if self.mark is None else self.mark
        if keep_from:
            del self.buf[:keep_from]
            self.pos -= keep_from
            if self.mark is not None:
                self.mark -= keep_from
        chunk = self.stream.read(READ_BYTES)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def peek(self) -> bytes:
        """The next byte that is not whitespace (b"" at the end), moving `pos` onto it."""
        while True:
            match = _NOT_WHITESPACE.search(self.buf, self.pos)
            if match:
                self.pos = match.start()
                return bytes(self.buf[self.pos : self.pos + 1])
            self.pos = len(self.buf)
            if not self.more():
                return b""

    def expect(self, allowed: bytes, what: str) -> bytes:
        byte = self.peek()
        if not byte or byte not in allowed:
            raise ReportSyntaxError(f"expected {what}, found {_shown(byte)}")
        self.pos += 1
        return byte


class _Value:
    """Where one value ends, how deep it goes, and whether it stayed small enough to keep."""

    def __init__(self, window: _Window, *, keep: bool) -> None:
        self.window = window
        self.keep = keep
        self.too_deep = False
        self.too_large = False

    def skip(self) -> None:
        window = self.window
        first = window.peek()
        if first == b'"':
            self._string()
        elif first in (b"{", b"["):
            self._container()
        elif first:
            self._scalar()
        else:
            raise ReportSyntaxError("the body ends where a value should be")

    def _string(self) -> None:
        window = self.window
        window.pos += 1
        while True:
            match = _STRING_STOP.search(window.buf, window.pos)
            if match is None:
                window.pos = len(window.buf)
            elif match.group() == b'"':
                window.pos = match.end()
                return
            elif match.end() < len(window.buf):  # a backslash and the byte it escapes
                window.pos = match.end() + 1
                continue
            else:
                window.pos = match.start()  # the escaped byte is in the next chunk
            self._read_on("a string")

    def _container(self) -> None:
        window = self.window
        flat = _FLAT_OBJECT.match(window.buf, window.pos)
        if flat is not None:  # most entries: an object of scalars, in one match
            window.pos = flat.end()
            return
        window.pos += 1
        depth = 1
        while True:
            open_string = False
            for match in _TOKEN.finditer(window.buf, window.pos):
                token = match.group()
                if token == b'"':  # a string that goes on past the bytes read so far
                    window.pos = match.start()
                    open_string = True
                    break
                window.pos = match.end()
                if token in _OPENING:
                    depth += 1
                    if depth > MAX_DEPTH and not self.too_deep:
                        self.too_deep = True
                        self._stop_keeping()
                elif token in _CLOSING:
                    depth -= 1
                    if depth == 0:
                        return
            # Outside the loop: reading on resizes the buffer the iterator is reading.
            if open_string:
                self._string()
            else:
                window.pos = len(window.buf)
                self._read_on("an entry")

    def _scalar(self) -> None:
        window = self.window
        while True:
            match = _SCALAR_END.search(window.buf, window.pos)
            if match is not None:
                window.pos = match.start()
                return
            window.pos = len(window.buf)
            if not window.more():
                return

    def _read_on(self, inside: str) -> None:
        window = self.window
        if window.mark is not None and len(window.buf) - window.mark > MAX_ENTRY_BYTES:
            self.too_large = True
            self._stop_keeping()
        if not window.more():
            raise ReportSyntaxError(f"the body ends inside {inside}")

    def _stop_keeping(self) -> None:
        self.keep = False
        self.window.mark = None


def split_report(stream: _Readable) -> Iterator[Any]:
    """Yield each entry of Report_Entry: a dict, or `Unreadable` with the reason. Nothing for
    `{}` or an empty (or null) Report_Entry. Raises ReportSyntaxError for a body whose
    structure is broken, and ReportShapeError for JSON that is not a report."""
    window = _Window(stream)
    window.expect(b"{", "a report object")
    keys: list[str] = []
    if window.peek() == b"}":
        window.pos += 1
    else:
        while True:
            key = _key(window)
            keys.append(key)
            window.expect(b":", "':' after a key")
            if key == "Report_Entry":
                yield from _entries(window)
            else:
                _Value(window, keep=False).skip()
            if window.expect(b",}", "',' or '}'") == b"}":
                break
    if window.peek():
        raise ReportSyntaxError(f"unexpected {_shown(window.peek())} after the report")
    if keys and "Report_Entry" not in keys:
        raise ReportShapeError(f"has no Report_Entry (keys: {', '.join(sorted(keys)[:5])})")


def _key(window: _Window) -> str:
    if window.peek() != b'"':
        raise ReportSyntaxError(f"expected a key, found {_shown(window.peek())}")
    window.mark = window.pos
    _Value(window, keep=True).skip()
    raw = bytes(window.buf[window.mark : window.pos])
    window.mark = None
    return str(json.loads(raw))


def _entries(window: _Window) -> Iterator[Any]:
    first = window.peek()
    if first == b"n":  # "Report_Entry": null, as an empty report
        _Value(window, keep=False).skip()
        return
    if first != b"[":
        kind = {b"{": "dict", b'"': "str"}.get(first, "a scalar")
        raise ReportShapeError(f"Report_Entry is not an array ({kind})")
    window.pos += 1
    if window.peek() == b"]":
        window.pos += 1
        return
    while True:
        # The common case in one match each: a flat object, then the separator after it.
        flat = _FLAT_OBJECT.match(window.buf, window.pos)
        if flat is not None:
            raw = bytes(window.buf[window.pos : flat.end()])
            window.pos = flat.end()
            yield _decoded(raw)
        else:
            yield _entry(window)
        separator = _SEPARATOR.match(window.buf, window.pos)
        if separator is not None:
            window.pos = separator.end()
            end = separator.group(1) == b"]"
        else:  # the separator is past the bytes read so far
            end = window.expect(b",]", "',' or ']' between entries") == b"]"
        if end:
            return


def _entry(window: _Window) -> Any:
    window.peek()
    window.mark = window.pos
    value = _Value(window, keep=True)
    value.skip()
    start, window.mark = window.mark, None
    if value.too_deep:
        return Unreadable(f"entry is nested deeper than {MAX_DEPTH} levels")
    if value.too_large:
        return Unreadable(f"entry is larger than {MAX_ENTRY_BYTES} bytes")
    assert start is not None
    return _decoded(bytes(window.buf[start : window.pos]))


def _decoded(raw: bytes) -> Any:
    try:
        entry = _DECODER.decode(raw.decode())
    except ValueError as exc:  # bad JSON inside the entry, bad UTF-8, an integer too long
        return Unreadable(_reason(exc))
    if not isinstance(entry, dict):
        return Unreadable(f"entry is not an object ({type(entry).__name__})")
    return entry


def _reason(exc: ValueError) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "integer string conversion" in text:
        return "entry has a number with too many digits"
    return f"entry is not valid JSON ({text[:120]})"


def _shown(byte: bytes) -> str:
    return "the end of the body" if not byte else repr(byte.decode("latin-1"))
