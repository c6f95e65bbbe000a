"""A fake accounting service on 127.0.0.1 for the run-accounting tests.

It applies each `Idempotency-Key` once (a repeat answers 409, as the real service does), keeps
the amount last applied per deposit id (to see which version of a record won), and fails on
script: `refuse` (400, for good), `unavailable` (503), `hang` (applies, then never answers: a
worker killed mid-call). Deposits are picked by their `deposit_id`.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

from support import QuietHTTPServer


class AccountingService:
    def __init__(self) -> None:
        self.applied: Counter[str] = Counter()  # key -> times applied (must stay 1)
        self.amounts: dict[str, str] = {}  # deposit id -> the amount last applied
        self.refuse: set[str] = set()
        self.unavailable: set[str] = set()
        self.hang: set[str] = set()
        self.posts = 0
        self.lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = QuietHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> AccountingService:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/cron-jobs"

    def heal(self) -> None:
        with self.lock:
            self.refuse.clear()
            self.unavailable.clear()
            self.hang.clear()

    def answer(self, key: str, payload: dict[str, Any]) -> tuple[int, bool]:
        """(status, hang after answering nothing)."""
        deposit = str(payload.get("deposit_id", ""))
        with self.lock:
            self.posts += 1
            if deposit in self.refuse:
                return 400, False
            if deposit in self.unavailable:
                return 503, False
            if self.applied[key]:
                return 409, deposit in self.hang
            self.applied[key] += 1
            self.amounts[deposit] = str(payload.get("amount"))
            return 201, deposit in self.hang


def _handler_for(service: AccountingService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, hang = service.answer(self.headers.get("Idempotency-Key", ""), json.loads(body))
            if hang:
                service._stopping.wait(600)  # the change is in; the answer never comes
                return
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler
