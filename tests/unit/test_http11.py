"""streams.http11.LeanTransport against raw servers on loopback: what the fake never says
(chunked bodies, 100 Continue, Connection: close, hang-ups) and how the pool behaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from streams.http11 import LeanClient, LeanTransport, parse_response

Handler = Callable[[bytes], bytes | None]
"""Request bytes -> response bytes; None: hang up without answering."""


class RawServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                answer = self.handler(head + body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


def ok(body: bytes = b"{}", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=LeanTransport(max_connections=2), timeout=httpx.Timeout(2.0, pool=0.3)
    ) as http:
        yield http


async def test_keep_alive_reuses_one_connection_and_sends_the_body(
    client: httpx.AsyncClient,
) -> None:
    seen: list[bytes] = []

    def handler(raw: bytes) -> bytes:
        seen.append(raw)
        return ok(b'{"id": "m1"}')

    async with RawServer(handler) as server:
        for i in range(5):
            response = await client.post(server.url + "/x?y=1", json={"n": i})
            assert response.status_code == 200
            assert response.json() == {"id": "m1"}
    assert server.connections == 1
    assert seen[0].startswith(b"POST /x?y=1 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in seen[0]
    assert seen[4].endswith(b'{"n":4}')


async def test_chunked_body_after_a_100_continue(client: httpx.AsyncClient) -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: t\r\n\r\n"
    )
    async with RawServer(lambda _: chunked) as server:
        first = await client.get(server.url)
        second = await client.get(server.url)
    assert (first.status_code, first.content, first.headers["x-a"]) == (201, b"Wikipedia", "b")
    assert second.content == b"Wikipedia"
    assert server.connections == 1


async def test_connection_close_is_honoured(client: httpx.AsyncClient) -> None:
    async with RawServer(lambda _: ok(b"a", b"Connection: close\r\n")) as server:
        for _ in range(3):
            assert (await client.get(server.url)).content == b"a"
    assert server.connections == 3


async def test_a_hang_up_without_an_answer_is_a_protocol_error(
    client: httpx.AsyncClient,
) -> None:
    async with RawServer(lambda _: None) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.post(server.url, json={})


async def test_a_silent_server_times_out_on_read() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(
            transport=LeanTransport(), timeout=httpx.Timeout(2.0, read=0.1)
        ) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"http://127.0.0.1:{port}/")
    finally:
        server.close()


async def test_the_pool_never_opens_more_than_its_limit(client: httpx.AsyncClient) -> None:
    gate = asyncio.Event()
    in_flight = 0
    most = 0

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal in_flight, most
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                in_flight += 1
                most = max(most, in_flight)
                await gate.wait()
                in_flight -= 1
                writer.write(ok())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        tasks = [asyncio.create_task(client.get(url)) for _ in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.PoolTimeout):  # both connections busy for longer than 0.3 s
            await client.get(url)
        gate.set()
        assert [r.status_code for r in await asyncio.gather(*tasks)] == [200, 200]
        results = await asyncio.gather(*(client.get(url) for _ in range(6)))
        assert {r.status_code for r in results} == {200}
        assert most == 2
    finally:
        server.close()


async def test_an_idle_connection_closed_by_the_server_is_replaced(
    client: httpx.AsyncClient,
) -> None:
    answers = iter([ok(b"1"), None, ok(b"2")])

    def handler(_: bytes) -> bytes | None:
        return next(answers)

    async with RawServer(handler) as server:
        assert (await client.get(server.url)).content == b"1"
        # The server hangs up on the next request; the one after gets a fresh connection.
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)
        assert (await client.get(server.url)).content == b"2"
    assert server.connections == 2


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", (204, b"", True)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", (200, b"x", False)),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            (200, b"", True),
        ),
    ],
)
def test_parse_response_keep_alive_rules(raw: bytes, want: tuple[int, bytes, bool]) -> None:
    parsed = parse_response(raw)
    assert parsed is not None
    status, _, _, body, used, keep = parsed
    assert (status, body, keep) == want
    assert used == len(raw)


def test_parse_response_waits_for_the_whole_body_and_reads_to_close() -> None:
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab") is None
    assert parse_response(b"HTTP/1.1 200 OK\r\n\r\nabc") is None
    parsed = parse_response(b"HTTP/1.1 200 OK\r\n\r\nabc", eof=True)
    assert parsed is not None and parsed[3] == b"abc" and parsed[5] is False
    with pytest.raises(httpx.RemoteProtocolError):
        parse_response(b"SMTP nonsense\r\n\r\n")


async def test_lean_client_runs_hooks_and_leaves_redirects_and_auth_to_httpx() -> None:
    seen: list[str] = []

    def handler(raw: bytes) -> bytes:
        line = raw.split(b"\r\n", 1)[0].decode()
        seen.append(line + (" auth" if b"\r\nAuthorization: Basic " in raw else ""))
        if line.startswith("GET /old"):
            return b"HTTP/1.1 302 Found\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n"
        return ok(b"fine")

    async def on_request(request: httpx.Request) -> None:
        seen.append(f"hook {request.url.path}")

    async def on_response(response: httpx.Response) -> None:
        seen.append(f"hook {response.status_code}")

    async with (
        RawServer(handler) as server,
        LeanClient(transport=LeanTransport(), timeout=httpx.Timeout(2.0)) as http,
    ):
        http.event_hooks = {"request": [on_request], "response": [on_response]}
        assert (await http.get(server.url + "/old")).status_code == 302
        followed = await http.get(server.url + "/old", follow_redirects=True)
        assert (followed.status_code, followed.content) == (200, b"fine")
        assert (await http.post(server.url + "/t", auth=("id", "secret"))).status_code == 200
    assert seen == [
        "hook /old",
        "GET /old HTTP/1.1",
        "hook 302",
        "hook /old",
        "GET /old HTTP/1.1",
        "hook 302",
        "hook /new",
        "GET /new HTTP/1.1",
        "hook 200",
        "hook /t",
        "POST /t HTTP/1.1 auth",
        "hook 200",
    ]
