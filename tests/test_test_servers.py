"""The tests' HTTP servers: a client killed mid-connection (as the process tests do) is not
printed as a server traceback."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from callback_server import CallbackServer


def test_a_connection_the_client_resets_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    with CallbackServer() as server:
        host, port = server.base_url.split("//")[1].split("/")[0].split(":")
        client = socket.create_connection((host, int(port)))
        client.sendall(b"POST /cron-jobs HTTP/1.1\r\nHost: x\r\n")  # a request cut short
        # Close with a reset (SO_LINGER 0), as the kernel does for a SIGKILLed process.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        time.sleep(0.3)  # the server's thread meets the reset
    assert "Traceback" not in capfd.readouterr().err
