"""Secrets never leave the process: one registry of every secret value resolved, and one
`redact` applied wherever text is shown or stored (log lines, the one-line errors, JSON and
table output, run records, DLQ reasons, and every RaasctlError's message).

A secret is scrubbed in each form it may come back in: raw; URL-encoded (`quote`, with and
without `/` kept, and `quote_plus`, as in an echoed form); JSON-escaped; with its whitespace
collapsed (error texts are often normalised); and base64 where it travels that way (the Basic
header's `user:password`, registered by its caller). Text is cut only after it is scrubbed
(`shorten`), and a secret's start cut off at the end of a text (six characters or more) is
scrubbed as well, so no recognisable part of one survives a truncation.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import quote, quote_plus

REDACTED = "***"
MIN_SECRET_CHARS = 4  # shorter values would redact ordinary words
MIN_PIECE_CHARS = 6  # a cut-off piece this long or longer is scrubbed too
ELLIPSIS = "…"

_lock = threading.Lock()
_forms: set[str] = set()  # every form of every secret
_ordered: tuple[str, ...] = ()  # the same, longest first (a form may contain another)


def register_secret(value: str) -> None:
    """Every resolved secret is registered here, so no output can carry it."""
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    forms = {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json.dumps(value)[1:-1],
        " ".join(value.split()),
    }
    global _ordered
    with _lock:
        new = {form for form in forms if len(form) >= MIN_SECRET_CHARS} - _forms
        if new:
            _forms.update(new)
            _ordered = tuple(sorted(_forms, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` without any registered secret, whole or with its start cut off at the end."""
    forms = _ordered
    if not forms or not text:
        return text
    for form in forms:
        if form in text:
            text = text.replace(form, REDACTED)
    return _scrub_cut_pieces(text, forms)


def shorten(text: str, limit: int) -> str:
    """Scrubbed first, then cut to `limit` characters (with an ellipsis when cut)."""
    text = redact(text)
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


def _scrub_cut_pieces(text: str, forms: tuple[str, ...]) -> str:
    """A secret's start left at the end of a text (before an ellipsis, if any): what a cut
    elsewhere (a server's own error page, an excerpt) leaves of it."""
    body, ellipsis = (text[: -len(ELLIPSIS)], ELLIPSIS) if text.endswith(ELLIPSIS) else (text, "")
    for form in forms:
        body = _start_cut_at_end(body, form)
    return body + ellipsis


def _start_cut_at_end(body: str, form: str) -> str:
    """The longest start of `form` that ends `body`, if six characters or more, scrubbed."""
    position = body.find(form[0], max(0, len(body) - len(form) + 1))
    while position != -1 and len(body) - position >= MIN_PIECE_CHARS:
        if form.startswith(body[position:]):
            return body[:position] + REDACTED
        position = body.find(form[0], position + 1)
    return body


def registered() -> int:
    """How many forms are registered (for tests and diagnostics; never the values)."""
    return len(_ordered)
