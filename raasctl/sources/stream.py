"""The one streaming parser for report bodies (Workday responses, fixture files, mock seeds).

A report is `{"Report_Entry": [ {...}, ... ]}`; `{}` is an empty report. ijson walks the body
entry by entry (`use_float=False`, so numbers arrive as Decimal or int and amounts keep their
exact digits), so memory stays flat however long the report is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ijson

from raasctl.codes import ErrorCode
from raasctl.errors import SourceError

ENTRY_PREFIX = "Report_Entry.item"
CHUNK_BYTES = 64 * 1024
# Enough of the body's start to judge an empty or odd report, and to show an XML fault.
HEAD_BYTES = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"


class ReportStream:
    """A body arriving in chunks, readable as a file (for ijson), whose start can be sniffed.

    It remembers the first HEAD_BYTES so an empty or unexpected report can be judged after
    parsing without ever holding the whole body.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""
        self._started = False
        self._head = bytearray()
        self.bytes_read = 0
        self.exhausted = False

    def _next_chunk(self) -> bytes:
        """The next non-empty piece of the body, or b"" at its end."""
        chunk: bytes | None = b"" if self._started else self._first_chunk()
        while not chunk:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.exhausted = True
                return b""
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        self.bytes_read += len(chunk)
        return chunk

    def _first_chunk(self) -> bytes:
        """The body's first bytes without a UTF-8 byte order mark, however it was split."""
        self._started = True
        start = b""
        for chunk in self._chunks:
            start += chunk
            if len(start) >= len(_BOM):
                break
        return start.removeprefix(_BOM)

    def first_byte(self) -> bytes:
        """The first byte that is not whitespace (b"" for an empty body); consumes nothing."""
        while True:
            stripped = self._pending.lstrip(_WHITESPACE)
            if stripped:
                return stripped[:1]
            chunk = self._next_chunk()
            if not chunk:
                return b""
            self._pending += chunk

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            self._pending = self._next_chunk()
        if size is None or size < 0:
            parts = [self._pending]
            while chunk := self._next_chunk():
                parts.append(chunk)
            self._pending = b""
            return b"".join(parts)
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def read_head(self, limit: int = HEAD_BYTES) -> bytes:
        """Up to `limit` bytes from the body's start, for error messages (reads on if needed)."""
        while len(self._head) < limit and not self.exhausted:
            chunk = self._next_chunk()
            if not chunk:
                break
            self._pending += chunk
        return bytes(self._head[:limit])

    @property
    def head(self) -> bytes:
        return bytes(self._head)


def preview(data: bytes, limit: int = 60) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    text = " ".join(text.split())
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def parse_entries(stream: ReportStream, *, where: str) -> Iterator[dict[str, Any]]:
    """Yield the report's entries one by one; SourceError REPORT_INVALID if it is not a report.

    `where` names the report in errors ("report Client_Deposits", a fixture's path).
    """
    first = stream.first_byte()
    if first != b"{":
        if first == b"":
            what = "is empty"
        else:
            what = f"is not a JSON report (starts {preview(stream.read_head(200))})"
        raise SourceError(f"{where} {what}", code=ErrorCode.REPORT_INVALID)
    count = 0
    try:
        for item in ijson.items(stream, ENTRY_PREFIX, use_float=False):
            count += 1
            if not isinstance(item, dict):
                raise SourceError(
                    f"{where}: entry {count} is not an object ({type(item).__name__})",
                    code=ErrorCode.REPORT_INVALID,
                )
            yield item
    except ijson.JSONError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(
            f"{where} is not valid JSON after {count} entries: {reason}",
            code=ErrorCode.REPORT_INVALID,
        ) from None
    if count == 0:
        _check_empty_report(stream, where)


def _check_empty_report(stream: ReportStream, where: str) -> None:
    """No entries came out: fine for `{}` or `{"Report_Entry": []}`, not for other shapes.

    ijson yields nothing both for an empty report and for one whose Report_Entry is not an
    array, so judge the (small) body itself. A body too big to have been kept is not empty.
    """
    if stream.bytes_read > len(stream.head):
        raise SourceError(
            f"{where} has no Report_Entry array of objects", code=ErrorCode.REPORT_INVALID
        )
    try:
        document = json.loads(stream.head)
    except ValueError as exc:  # ijson accepted it, so this is not expected
        raise SourceError(
            f"{where} is not valid JSON: {exc}", code=ErrorCode.REPORT_INVALID
        ) from None
    if not isinstance(document, dict):
        raise SourceError(
            f"{where} is not a report object ({type(document).__name__})",
            code=ErrorCode.REPORT_INVALID,
        )
    if "Report_Entry" not in document:
        if document:
            keys = ", ".join(sorted(document)[:5])
            raise SourceError(
                f"{where} has no Report_Entry (keys: {keys})", code=ErrorCode.REPORT_INVALID
            )
        return
    entries = document["Report_Entry"]
    if entries is not None and not isinstance(entries, list):
        raise SourceError(
            f"{where}: Report_Entry is not an array ({type(entries).__name__})",
            code=ErrorCode.REPORT_INVALID,
        )


def file_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            yield chunk


def iter_report_file(path: Path) -> Iterator[dict[str, Any]]:
    """The entries of a report-shaped JSON file, streamed. SourceError if it is missing."""
    if not path.is_file():
        raise SourceError(f"report file {path} not found", code=ErrorCode.SOURCE_FAILED)
    try:
        yield from parse_entries(ReportStream(file_chunks(path)), where=str(path))
    except OSError as exc:
        raise SourceError(
            f"cannot read report file {path}: {exc.strerror or exc}", code=ErrorCode.SOURCE_FAILED
        ) from None
