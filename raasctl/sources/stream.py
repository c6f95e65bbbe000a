"""The one streaming parser for report bodies (Workday responses, fixture files, mock seeds).

A report is `{"Report_Entry": [ {...}, ... ]}`; `{}` is an empty report. `entries.split_report`
walks the body entry by entry (numbers arrive as Decimal or int, so amounts keep their exact
digits), so memory stays flat however long the report is, and one hostile entry costs only
itself (it comes out `Unreadable`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from raasctl.codes import ErrorCode
from raasctl.errors import SourceError
from raasctl.sources.base import ReportEntry
from raasctl.sources.entries import ReportShapeError, ReportSyntaxError, split_report

CHUNK_BYTES = 64 * 1024
# Enough of the body's start to judge an empty or odd report, and to show an XML fault.
HEAD_BYTES = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"


class ReportStream:
    """A body arriving in chunks, readable as a file, whose start can be sniffed.

    It remembers the first HEAD_BYTES so an unexpected body (an error page, a SOAP fault) can
    be shown in errors without ever holding the whole body.
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


def preview(data: bytes, limit: int = 60) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    text = " ".join(text.split())
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def parse_entries(stream: ReportStream, *, where: str) -> Iterator[ReportEntry]:
    """Yield the report's entries one by one: each a dict, or `Unreadable` (counted invalid
    by the job, the rest go on). SourceError REPORT_INVALID if the body is not a report.

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
        for entry in split_report(stream):
            count += 1
            yield entry
    except ReportSyntaxError as exc:
        raise SourceError(
            f"{where} is not valid JSON after {count} entries: {exc}",
            code=ErrorCode.REPORT_INVALID,
        ) from None
    except ReportShapeError as exc:
        raise SourceError(f"{where} {exc}", code=ErrorCode.REPORT_INVALID) from None


def file_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            yield chunk


def iter_report_file(path: Path) -> Iterator[ReportEntry]:
    """The entries of a report-shaped JSON file, streamed. SourceError if it is missing."""
    if not path.is_file():
        raise SourceError(f"report file {path} not found", code=ErrorCode.SOURCE_FAILED)
    try:
        yield from parse_entries(ReportStream(file_chunks(path)), where=str(path))
    except OSError as exc:
        raise SourceError(
            f"cannot read report file {path}: {exc.strerror or exc}", code=ErrorCode.SOURCE_FAILED
        ) from None
