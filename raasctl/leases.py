"""A lease on a named lock in State: taken once, renewed in the background while the holder
lives, so a killed process frees it within one lease (at most LEASE_S) with nobody's help."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from raasctl.errors import RaasctlError
from raasctl.logs import event
from raasctl.state.base import State

LEASE_S = 60
RENEW_EVERY_S = LEASE_S / 4


def this_process() -> str:
    """The holder name of this process: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """Renews `name` for `owner` every RENEW_EVERY_S until `stop()`; `lost` is set if another
    owner took it meanwhile (say, after this process was stopped for longer than a lease)."""

    def __init__(
        self,
        state: State,
        name: str,
        owner: str,
        *,
        lease_s: int = LEASE_S,
        renew_every_s: float = RENEW_EVERY_S,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.state = state
        self.name = name
        self.owner = owner
        self.lease_s = lease_s
        self.renew_every_s = renew_every_s
        self.holder = this_process()
        self._now = now
        self.lost = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="raasctl-lease", daemon=True)

    def acquire(self) -> bool:
        """Take the lock (False: another owner holds it) and start renewing it."""
        if not self.state.acquire_lock(
            self.name, self.owner, self.lease_s, self._now(), holder=self.holder
        ):
            return False
        self._thread.start()
        return True

    def release(self) -> None:
        """Stop renewing and give the lock back (best effort: it lapses by itself anyway)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self.state.release_lock(self.name, self.owner)
        except RaasctlError as exc:  # a full disk, a lost connection: it lapses on its own
            event(exc.code, f"releasing lock {self.name} failed: {exc}", level=logging.WARNING)

    def _renew(self) -> None:
        while not self._stopping.wait(self.renew_every_s):
            try:
                renewed = self.state.acquire_lock(
                    self.name, self.owner, self.lease_s, self._now(), holder=self.holder
                )
            except RaasctlError as exc:
                event(exc.code, f"renewing lock {self.name} failed: {exc}", level=logging.WARNING)
                continue
            if not renewed:
                self.lost.set()
                return
