"""A fake accounting service on 127.0.0.1: the HTTP callback the deployed sink posts to.

    with CallbackServer(fail_rate=0.3, seed=7) as server:
        sink = HttpSink(server.base_url, server.token, timeout_s=0.5)
        ...
        assert server.applied_keys() == expected_keys

What it does (ThreadingHTTPServer, HTTP/1.1 keep-alive, one thread per connection):

- `POST /<cron>` with `Authorization: Bearer <token>` and `Idempotency-Key: <key>`: applies
  the key once (201); a key applied already answers 409, as the real service does.
- Faults, deterministic by `seed`: attempt n of key k fails when a hash of (seed, k, n) falls
  under `fail_rate`, so a rerun fails the same attempts whatever the thread interleaving.
  Half the faults are `500`s (nothing applied), half are timeouts: the change IS applied and
  the answer comes `timeout_delay_s` late, past the client's timeout, so the retry must be
  recognised by its Idempotency-Key (409).
- Poison payloads (`"poison": true`, or a key matching `poison_keys`) get 400 with a reason.
- `required_ids` (cron -> record id field), when given, makes it check entries as the real
  service does: a cron it does not know gets 404, a payload without its record id 422, each
  with a reason naming the problem; nothing is applied.
- `outage(503, retry_after="7")` answers every request with that status (and Retry-After)
  without applying anything, until `outage(None)`: the service down for maintenance.
- `latency_s` delays every answer (the benchmark's 200 ms downstream); `latency_for(key)`,
  when given, instead (a known latency distribution).
- `record_starts` keeps the arrival time of every request (time.monotonic()).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from support import QuietHTTPServer


@dataclass(frozen=True)
class Served:
    key: str
    cron: str
    status: int
    fault: str | None  # "error", "timeout", "outage" or None
    at: float  # time.monotonic() on arrival


class CallbackServer:
    def __init__(
        self,
        *,
        token: str = "cb-token-for-tests-0123",
        fail_rate: float = 0.0,
        seed: int = 0,
        timeout_delay_s: float = 1.0,
        latency_s: float = 0.0,
        poison_keys: Iterable[str] = (),
        required_ids: Mapping[str, str] | None = None,
        latency_for: Callable[[str], float] | None = None,
    ) -> None:
        self.token = token
        self.fail_rate = fail_rate
        self.seed = seed
        self.timeout_delay_s = timeout_delay_s
        self.latency_s = latency_s
        self.latency_for = latency_for
        self.poison_keys = frozenset(poison_keys)
        self.required_ids = dict(required_ids) if required_ids is not None else None
        self._outage: tuple[int, str | None] | None = None  # (status, Retry-After)
        self.served: list[Served] = []
        self.applied: Counter[str] = Counter()  # key -> times applied (must stay 1)
        self.payloads: dict[str, dict[str, Any]] = {}
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> CallbackServer:
        server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> CallbackServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cron-jobs"

    # ------------------------------------------------------------ what happened

    def applied_keys(self) -> set[str]:
        with self._lock:
            return set(self.applied)

    def twice_applied(self) -> list[str]:
        with self._lock:
            return [key for key, times in self.applied.items() if times > 1]

    def statuses(self) -> Counter[int]:
        with self._lock:
            return Counter(served.status for served in self.served)

    def faults(self) -> Counter[str]:
        with self._lock:
            return Counter(served.fault for served in self.served if served.fault)

    def starts(self) -> list[float]:
        with self._lock:
            return sorted(served.at for served in self.served)

    def outage(self, status: int | None = 503, retry_after: str | None = None) -> None:
        """Answer every request with `status` (None ends the outage), applying nothing."""
        with self._lock:
            self._outage = None if status is None else (status, retry_after)

    # ------------------------------------------------------------ decisions

    def fault_for(self, key: str, attempt: int) -> str | None:
        """The fault (if any) for this attempt of this key; the same for every rerun."""
        if self.fail_rate <= 0:
            return None
        digest = hashlib.sha256(f"{self.seed}:{key}:{attempt}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw >= self.fail_rate:
            return None
        return "error" if digest[8] % 2 == 0 else "timeout"

    def rejection(self, cron: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """The answer to an entry the service cannot take under `required_ids`, else None."""
        if self.required_ids is None:
            return None
        id_field = self.required_ids.get(cron)
        if id_field is None:
            return 404, {"error": f"unknown cron {cron!r}"}
        if payload.get(id_field) in (None, ""):
            return 422, {"error": f"{cron} payload lacks {id_field}"}
        return None

    def handle(
        self, cron: str, key: str, payload: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Decide the answer and apply; returns (status, body, extra headers). Runs in a
        handler thread."""
        arrived = time.monotonic()
        with self._lock:
            self._attempts[key] += 1
            attempt = self._attempts[key]
            outage = self._outage
        fault = None
        headers: dict[str, str] = {}
        rejected = self.rejection(cron, payload)
        if outage is not None:
            fault = "outage"
            status, body = outage[0], {"error": "service unavailable (injected outage)"}
            if outage[1] is not None:
                headers["Retry-After"] = outage[1]
        elif rejected is not None:
            status, body = rejected
        elif payload.get("poison") is True or key in self.poison_keys:
            status, body = 400, {"error": f"invalid {cron} entry: payload rejected as poison"}
        elif key in self.applied:
            status, body = 409, {"error": "already applied", "key": key}
        else:
            fault = self.fault_for(key, attempt)
            if fault == "error":
                status, body = 500, {"error": "internal error (injected)"}
            else:  # applied, answered in time or (a timeout) too late
                with self._lock:
                    already = key in self.applied
                    self.applied[key] += 1
                    self.payloads[key] = payload
                status, body = (409, {"error": "already applied"}) if already else (201, {})
        with self._lock:
            self.served.append(Served(key, cron, status, fault, arrived))
        latency = self.latency_s if self.latency_for is None else self.latency_for(key)
        delay = latency + (self.timeout_delay_s if fault == "timeout" else 0.0)
        if delay:
            self._stopping.wait(delay)
        return status, body, headers


class _Server(QuietHTTPServer):
    # listen()'s backlog, set when the server binds: the default of 5 drops the connections
    # a 16-slot worker opens at once, and a dropped SYN is retried only after a second.
    request_queue_size = 128


def _handler_for(server: CallbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        callback = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for
    # the client's delayed ACK (40 ms), which would dominate a fast downstream's latency.
    disable_nagle_algorithm = True
    callback: CallbackServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Authorization") != f"Bearer {self.callback.token}":
            self._send(401, {"error": "unauthorized"})
            return
        key = self.headers.get("Idempotency-Key")
        if not key:
            self._send(400, {"error": "Idempotency-Key header is required"})
            return
        try:
            payload = json.loads(raw)
        except ValueError:
            self._send(400, {"error": "body is not JSON"})
            return
        cron = self.path.rstrip("/").rsplit("/", 1)[-1]
        status, body, headers = self.callback.handle(cron, key, payload)
        self._send(status, body, headers)

    def _send(
        self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout); the change stands
