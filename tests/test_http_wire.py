"""The sink's HTTP/1.1 client against servers that answer byte for byte as each test says."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import certifi
import pytest

from raasctl.http_wire import (
    MAX_BODY_BYTES,
    Origin,
    WireError,
    WireTimeout,
    environment_proxy,
    parse_proxy,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
Serve = Callable[["Peer"], None]
Request = tuple[str, dict[str, str], bytes]


class Peer:
    """One accepted connection, read a request at a time (each also kept in `seen`)."""

    def __init__(self, sock: socket.socket, seen: list[Request]) -> None:
        self.sock = sock
        self.buffer = b""
        self.seen = seen

    def request(self) -> Request | None:
        """The next request's line, headers (lower-cased names) and body; None at EOF."""
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self.buffer += self.sock.recv(65536)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        self.seen.append((line, headers, body))
        return line, headers, body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


class Server:
    """Accepts connections on 127.0.0.1 and hands each to `serve` on a thread of its own."""

    def __init__(self, serve: Serve, context: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.serve, self.context = serve, context
        self.connections = 0
        self.requests: list[Request] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        try:
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_side=True)
            self.serve(Peer(sock, self.requests))
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serving() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(serve: Serve, context: ssl.SSLContext | None = None) -> Server:
        servers.append(Server(serve, context))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def answering(*answers: bytes, then_close: bool = False) -> Serve:
    """Each request on a connection gets the next of `answers` (the last one again after)."""

    def serve(peer: Peer) -> None:
        n = 0
        while peer.request() is not None:
            peer.send(answers[min(n, len(answers) - 1)])
            n += 1
            if then_close:
                return

    return serve


def start_answering(serving: Callable[..., Server], *answers: bytes, **kw: bool) -> Server:
    return serving(answering(*answers, **kw))


def origin(port: int, *, scheme: str = "http", timeout_s: float = 2.0, **kw: object) -> Origin:
    return Origin(
        f"{scheme}://127.0.0.1:{port}",
        connect_timeout_s=timeout_s,
        timeout_s=timeout_s,
        ca_file=str(kw.pop("ca_file", certifi.where())),
        **kw,  # type: ignore[arg-type]
    )


def post(client: Origin, path: str = "/cron-jobs/x") -> tuple[int, bytes]:
    answer = client.post(path, "Content-Type: application/json\r\n", b'{"a": 1}')
    return answer.status, answer.body


def test_a_request_goes_out_whole_and_one_connection_carries_a_threads_calls(
    serving: Callable[..., Server],
) -> None:
    server = start_answering(serving, OK)
    client = origin(server.port)

    assert [post(client) for _ in range(5)] == [(200, b"{}")] * 5

    assert server.connections == 1
    line, headers, body = server.requests[0]
    assert line == "POST /cron-jobs/x HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == "8" and body == b'{"a": 1}'
    client.close()


def test_each_thread_keeps_its_own_connection(serving: Callable[..., Server]) -> None:
    server = start_answering(serving, OK)
    client = origin(server.port)
    barrier = threading.Barrier(4)

    def calls() -> list[tuple[int, bytes]]:
        barrier.wait()
        return [post(client) for _ in range(10)]

    threads_results: list[list[tuple[int, bytes]]] = []
    threads = [threading.Thread(target=lambda: threads_results.append(calls())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert threads_results == [[(200, b"{}")] * 10] * 4
    assert server.connections == 4
    client.close()


def test_a_connection_the_server_closed_while_idle_is_replaced(
    serving: Callable[..., Server],
) -> None:
    server = start_answering(serving, OK, then_close=True)
    client = origin(server.port)

    assert post(client) == (200, b"{}")
    time.sleep(0.1)  # the server's FIN arrives
    assert post(client) == (200, b"{}")

    assert server.connections == 2
    client.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_an_answer_that_ends_its_connection_is_not_reused(
    serving: Callable[..., Server], answer: bytes
) -> None:
    server = start_answering(serving, answer)
    client = origin(server.port)

    assert [post(client), post(client)] == [(200, b"{}")] * 2

    assert server.connections == 2
    client.close()


def test_a_chunked_body_is_read_whole_and_its_connection_reused(
    serving: Callable[..., Server],
) -> None:
    chunked = (
        b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    server = start_answering(serving, chunked, OK)
    client = origin(server.port)

    assert post(client) == (422, b"hello, world")
    assert post(client) == (200, b"{}")
    assert server.connections == 1
    client.close()


def test_a_body_ended_by_the_close_is_read_to_the_end(serving: Callable[..., Server]) -> None:
    server = start_answering(serving, b"HTTP/1.1 500 Oops\r\n\r\nstack trace", then_close=True)
    client = origin(server.port)

    assert post(client) == (500, b"stack trace")
    client.close()


def test_interim_answers_are_skipped(serving: Callable[..., Server]) -> None:
    server = start_answering(serving, b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    client = origin(server.port)

    assert post(client) == (200, b"{}")
    client.close()


def test_a_long_body_is_cut_and_its_connection_closed(serving: Callable[..., Server]) -> None:
    size = MAX_BODY_BYTES * 4
    big = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    server = start_answering(serving, big, OK)
    client = origin(server.port)

    status, body = post(client)
    assert status == 500 and body == b"x" * MAX_BODY_BYTES
    assert post(client) == (500, b"x" * MAX_BODY_BYTES)
    assert server.connections == 2
    client.close()


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer: 'SSH-2.0-OpenSSH'"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n{}", "an invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "a malformed header line"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", "run over 64 KiB"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", "malformed chunk"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", "malformed chunk"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "an invalid Content-Length"),
        (b"HTTP/1.1 \xb200 OK\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 999 What\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "in the middle of the answer's body"),
        (b"HTTP/1.1 200", "in the middle of the answer's headers"),
        (b"", "closed the connection without answering"),
    ],
)
def test_an_answer_that_is_not_http_fails_naming_what_is_wrong(
    serving: Callable[..., Server], answer: bytes, says: str
) -> None:
    server = start_answering(serving, answer, then_close=True)
    client = origin(server.port)

    with pytest.raises(WireError, match=says.replace("(", r"\(")):
        post(client)
    client.close()


def test_an_answer_that_trickles_in_times_out_as_a_whole(serving: Callable[..., Server]) -> None:
    def trickle(peer: Peer) -> None:
        peer.request()
        for byte in OK:
            peer.send(bytes([byte]))
            time.sleep(0.05)

    server = serving(trickle)
    client = origin(server.port, timeout_s=0.3)
    started = time.monotonic()

    with pytest.raises(WireTimeout, match=r"timed out after 0\.3 s waiting for the answer"):
        post(client)
    assert time.monotonic() - started < 1.0
    client.close()


def test_a_refused_connection_names_the_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(WireError, match=rf"127\.0\.0\.1:{port}: \[Errno 111\]"):
        post(origin(port))


# ---------------------------------------------------------------- TLS and proxies


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounting test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def tls_server(serving: Callable[..., Server], certificate: tuple[Path, Path]) -> Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return serving(answering(OK), context)


def test_tls_is_verified_against_the_given_ca_bundle(
    serving: Callable[..., Server], certificate: tuple[Path, Path]
) -> None:
    server = tls_server(serving, certificate)
    trusted = origin(server.port, scheme="https", ca_file=certificate[0])

    assert [post(trusted), post(trusted)] == [(200, b"{}")] * 2
    assert server.connections == 1
    trusted.close()

    with pytest.raises(WireError, match="TLS: certificate verify failed"):
        post(origin(server.port, scheme="https"))  # certifi's bundle does not know it


def connect_proxy(
    serving: Callable[..., Server], target_port: int, seen: list[dict[str, str]]
) -> Server:
    """A proxy that opens CONNECT tunnels to 127.0.0.1:`target_port` only."""

    def serve(peer: Peer) -> None:
        request = peer.request()
        assert request is not None
        line, headers, _ = request
        seen.append({"line": line, **headers})
        if line != f"CONNECT 127.0.0.1:{target_port} HTTP/1.1":
            peer.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        upstream = socket.create_connection(("127.0.0.1", target_port))
        peer.send(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                dst.close()

        threading.Thread(target=pipe, args=(upstream, peer.sock), daemon=True).start()
        pipe(peer.sock, upstream)

    return serving(serve)


def test_https_goes_through_the_proxy_by_connect_with_its_credentials(
    serving: Callable[..., Server], certificate: tuple[Path, Path]
) -> None:
    target = tls_server(serving, certificate)
    seen: list[dict[str, str]] = []
    proxy = connect_proxy(serving, target.port, seen)
    client = origin(
        target.port,
        scheme="https",
        ca_file=certificate[0],
        proxy=parse_proxy(f"http://ops:s%40fe@127.0.0.1:{proxy.port}"),
    )

    assert [post(client), post(client)] == [(200, b"{}")] * 2

    assert len(seen) == 1  # one tunnel, kept
    assert seen[0]["proxy-authorization"] == "Basic b3BzOnNAZmU="  # ops:s@fe
    line, headers, _ = target.requests[0]
    assert line == "POST /cron-jobs/x HTTP/1.1"
    assert "proxy-authorization" not in headers  # the credentials stay with the proxy
    client.close()


def test_a_proxy_that_refuses_the_tunnel_is_named_with_its_answer(
    serving: Callable[..., Server], certificate: tuple[Path, Path]
) -> None:
    seen: list[dict[str, str]] = []
    proxy = connect_proxy(serving, 1, seen)  # tunnels only to port 1
    client = origin(
        4443, scheme="https", ca_file=certificate[0], proxy=parse_proxy(f"127.0.0.1:{proxy.port}")
    )

    with pytest.raises(
        WireError,
        match=rf"proxy 127\.0\.0\.1:{proxy.port} refused the tunnel to "
        r"127\.0\.0\.1:4443: 403 Forbidden",
    ):
        post(client)


@pytest.mark.parametrize(
    ("env", "url", "proxy"),
    [
        ({"HTTPS_PROXY": "http://p:3128"}, "https://acct.example/x", "http://p:3128"),
        ({"HTTPS_PROXY": "p:3128"}, "https://acct.example/x", "http://p:3128"),
        ({"HTTPS_PROXY": "http://p:3128"}, "http://acct.example/x", None),
        ({"HTTP_PROXY": "http://p:3128"}, "http://acct.example/x", "http://p:3128"),
        ({"ALL_PROXY": "http://p:3128"}, "https://acct.example/x", "http://p:3128"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".example"}, "https://acct.example/", None),
        ({"https_proxy": "http://p:3128", "no_proxy": "*"}, "https://acct.example/", None),
        ({}, "https://acct.example/x", None),
    ],
)
def test_the_environments_proxy_is_chosen_as_requests_would(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, proxy: str | None
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert environment_proxy(url) == proxy


def test_a_proxy_other_than_http_is_refused() -> None:
    with pytest.raises(ValueError, match="only http:// proxies"):
        parse_proxy("socks5://p:1080")
