"""AWS Signature Version 4 for the SQS wire's POSTs, as botocore's SigV4Auth signs them.

botocore's signer builds the canonical request through email-style header objects and derives
the signing key with four HMACs on every call: about 0.2 ms of CPU a request, more than
sending the request and reading its answer. The wire's requests all have one shape (POST to
one URL, a JSON body, a handful of headers), so this signer works out the URL's part of the
canonical request once, keeps the day's signing key until the date or the credentials change,
and signs a request with one SHA-256 of the body, one of the canonical request and one HMAC.

What it signs is what botocore signs: every header given (names lower-cased, values with their
runs of whitespace folded), Host (without a default port), X-Amz-Date and, with temporary
credentials, X-Amz-Security-Token; the body's SHA-256 always. tests/test_sigv4.py holds it to
botocore's signature for the same request and instant.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Protocol
from urllib.parse import quote, urlsplit

from botocore.utils import normalize_url_path

ALGORITHM = "AWS4-HMAC-SHA256"


class FrozenCredentials(Protocol):
    access_key: str
    secret_key: str
    token: str | None


class SigV4:
    """Signs POSTs to `url` for one region and service (thread-safe)."""

    def __init__(self, url: str, region: str, service: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
            host = f"{host}:{parts.port}"
        self.host = host
        self.region = region
        self.service = service
        pairs = sorted(pair.partition("=")[::2] for pair in parts.query.split("&") if parts.query)
        query = "&".join(f"{key}={value}" for key, value in pairs)
        self._url_part = f"POST\n{quote(normalize_url_path(parts.path), safe='/~')}\n{query}\n"
        # (access key, secret key, date) -> that day's signing key; one entry, swapped whole.
        self._key: tuple[str, str, str, bytes] = ("", "", "", b"")

    def __repr__(self) -> str:  # never the signing key
        return f"SigV4({self.host!r}, {self.region!r}, {self.service!r})"

    def sign(
        self,
        credentials: FrozenCredentials,
        headers: dict[str, str],
        body: bytes,
        *,
        now: float | None = None,
    ) -> dict[str, str]:
        """The headers to send with `headers` and `body`: X-Amz-Date, X-Amz-Security-Token
        (with a session token) and Authorization. `now`: seconds since the epoch (the clock's
        by default)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        added = {"X-Amz-Date": stamp}
        if credentials.token:
            added["X-Amz-Security-Token"] = credentials.token
        signed = {
            name.lower(): " ".join(value.split())
            for name, value in (*headers.items(), *added.items(), ("host", self.host))
        }
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical = "".join(
            (
                self._url_part,
                "".join(f"{name}:{signed[name]}\n" for name in names),
                "\n",
                signed_names,
                "\n",
                hashlib.sha256(body).hexdigest(),
            )
        )
        date = stamp[:8]
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = (
            f"{ALGORITHM}\n{stamp}\n{scope}\n"
            + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        )
        signature = hmac.new(
            self._signing_key(credentials, date), to_sign.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        added["Authorization"] = (
            f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return added

    def _signing_key(self, credentials: FrozenCredentials, date: str) -> bytes:
        access_key, secret_key, day, key = self._key
        if (access_key, secret_key, day) == (credentials.access_key, credentials.secret_key, date):
            return key
        key = f"AWS4{credentials.secret_key}".encode()
        for part in (date, self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
        self._key = (credentials.access_key, credentials.secret_key, date, key)
        return key
