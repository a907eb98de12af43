"""A lean HTTP/1.1 keep-alive transport for httpx, for the provider's hot path.

httpx's default transport (httpcore over anyio) costs about 0.5 ms of CPU per request on
this class of machine: it checks every pooled connection's socket on each request, wraps
each read and write in anyio cancel scopes, and writes headers and body in separate
syscalls (profile in bench/results/dispatch.md). This transport keeps httpx's client, its
request and response models and its exception types, and does the HTTP/1.1 exchange on a
plain ``asyncio.Protocol``: one write per request, a connection's closure noticed by the
event loop instead of polled, and a small response parser (Content-Length, chunked, or
read to close).

It is deliberately small: HTTP/1.1 only, no pipelining, no proxies, no HTTP upgrades. The
exception types are httpx's, with httpcore's meanings, so a caller classifies failures the
same way (a request that may have reached the server surfaces as ``ReadTimeout``,
``ReadError`` or ``RemoteProtocolError``; one that cannot have as ``ConnectError``,
``ConnectTimeout`` or ``PoolTimeout``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from types import TracebackType
from typing import Any, cast

import httpx

__all__ = ["LeanClient", "LeanTransport", "parse_response"]

_MAX_HEAD = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


class _Incomplete(Exception):
    """More bytes are needed."""


def _chunked(buf: bytearray | bytes, start: int) -> tuple[bytes, int]:
    """Decode a chunked body starting at ``start``; returns (body, end offset)."""
    parts: list[bytes] = []
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            raise _Incomplete
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise httpx.RemoteProtocolError(f"bad chunk size {size_text!r}") from None
        pos = eol + 2
        if size == 0:
            # Trailers (rare) end with an empty line.
            end = buf.find(b"\r\n", pos)
            while end >= 0 and end != pos:
                pos = end + 2
                end = buf.find(b"\r\n", pos)
            if end < 0:
                raise _Incomplete
            return b"".join(parts), end + 2
        if len(buf) < pos + size + 2:
            raise _Incomplete
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


def parse_response(
    buf: bytearray | bytes, head_only: bool = False, eof: bool = False
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, int, bool] | None:
    """One response from the front of ``buf``: (status, reason, headers, body, bytes used,
    keep-alive), or None if more bytes are needed. 1xx responses are skipped. ``eof``:
    the peer closed, so a body without length ends here."""
    start = 0
    while True:
        end = buf.find(b"\r\n\r\n", start)
        if end < 0:
            if len(buf) - start > _MAX_HEAD:
                raise httpx.RemoteProtocolError("response head too large")
            return None
        lines = bytes(buf[start:end]).split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:100]!r}")
        status = int(code)
        if 100 <= status < 200:
            start = end + 4
            continue
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise httpx.RemoteProtocolError("malformed header line")
            value = value.strip()
            headers.append((name, value))
            lower = name.lower()
            if lower == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise httpx.RemoteProtocolError("bad Content-Length") from None
            elif lower == b"transfer-encoding":
                chunked = value.lower().endswith(b"chunked")
            elif lower == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        body_at = end + 4
        if head_only or status in _NO_BODY_STATUS:
            return status, reason, headers, b"", body_at, keep_alive
        if chunked:
            try:
                body, used = _chunked(buf, body_at)
            except _Incomplete:
                return None
            return status, reason, headers, body, used, keep_alive
        if length is not None:
            if len(buf) < body_at + length:
                return None
            return (
                status,
                reason,
                headers,
                bytes(buf[body_at : body_at + length]),
                (body_at + length),
                keep_alive,
            )
        # No length: the body runs to the connection's close.
        if not eof:
            return None
        return status, reason, headers, bytes(buf[body_at:]), len(buf), False


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: Exception | None = None

    # --- protocol callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- use -----------------------------------------------------------------------

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(
        self, request: httpx.Request, data: bytes, read_timeout: float | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
        assert self.transport is not None  # noqa: S101
        if self._buf:
            # Bytes nobody asked for: the connection is out of step, so it is not reused.
            raise httpx.RemoteProtocolError("unexpected data on an idle connection")
        try:
            self.transport.write(data)
        except (OSError, RuntimeError) as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
        head_only = request.method == "HEAD"
        loop = asyncio.get_running_loop()
        deadline = None if read_timeout is None else loop.time() + read_timeout
        while True:
            parsed = parse_response(self._buf, head_only, eof=self.closed)
            if parsed is not None:
                status, reason, headers, body, used, keep_alive = parsed
                del self._buf[:used]
                return status, reason, headers, body, keep_alive and not self.closed
            if self.closed:
                if self._lost is not None:
                    raise httpx.ReadError(str(self._lost), request=request)
                if not self._buf:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    )
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body",
                    request=request,
                )
            self._waiter = loop.create_future()
            try:
                if deadline is None:
                    await self._waiter
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise httpx.ReadTimeout("read timed out", request=request)
                    try:
                        async with asyncio.timeout(remaining):
                            await self._waiter
                    except TimeoutError:
                        raise httpx.ReadTimeout("read timed out", request=request) from None
            finally:
                self._waiter = None


def _head(request: httpx.Request, body: bytes) -> bytes:
    url = request.url
    target = url.raw_path or b"/"
    parts = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers.raw:
        if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
            chunked = True
        parts += [name, b": ", value, b"\r\n"]
    parts.append(b"\r\n")
    if chunked:
        if body:
            parts += [b"%x\r\n" % len(body), body, b"\r\n"]
        parts.append(b"0\r\n\r\n")
    else:
        parts.append(body)
    return b"".join(parts)


class LeanTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=LeanTransport(...))``: keep-alive HTTP/1.1 for a few
    hosts, at most ``max_connections`` open at once."""

    def __init__(
        self,
        max_connections: int = 100,
        keepalive_expiry: float = 5.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}
        self._count = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._all: set[_Connection] = set()
        self._closed = False

    # --- the httpx transport API ------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}", request=request)
        port = url.port or (443 if scheme == b"https" else 80)
        origin = (scheme, url.raw_host, port)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        data = _head(request, body)
        conn = await self._acquire(request, origin, timeouts)
        reuse = False
        try:
            status, reason, headers, content, reuse = await conn.exchange(
                request, data, timeouts.get("read")
            )
        finally:
            self._release(origin, conn, reuse)
        return httpx.Response(
            status,
            headers=headers,
            content=content,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
            request=request,
        )

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
        self._count = 0
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def __aenter__(self) -> LeanTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    # --- the pool ---------------------------------------------------------------------

    async def _acquire(
        self,
        request: httpx.Request,
        origin: tuple[bytes, bytes, int],
        timeouts: dict[str, float | None],
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        pool_timeout = timeouts.get("pool")
        deadline = None if pool_timeout is None else loop.time() + pool_timeout
        while True:
            idle = self._idle.get(origin)
            now = loop.time()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self._expiry:
                    return conn
                self._drop(conn)
            if self._count < self._max:
                break
            if self._evict_idle():
                continue
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                if deadline is None:
                    await waiter
                else:
                    try:
                        async with asyncio.timeout(max(0.0, deadline - loop.time())):
                            await waiter
                    except TimeoutError:
                        raise httpx.PoolTimeout(
                            "no connection free in the pool", request=request
                        ) from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self._closed:
                raise RuntimeError("the transport is closed")
        self._count += 1
        try:
            return await self._connect(request, origin, timeouts.get("connect"))
        except BaseException:
            self._count -= 1
            self._wake()
            raise

    async def _connect(
        self, request: httpx.Request, origin: tuple[bytes, bytes, int], timeout: float | None
    ) -> _Connection:
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii")
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == b"https" else None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("connect timed out", request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        self._all.add(conn)
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            verify = self._verify
            ctx = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        return self._ssl

    def _release(self, origin: tuple[bytes, bytes, int], conn: _Connection, reuse: bool) -> None:
        if reuse and not conn.closed and not self._closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(origin, []).append(conn)
        else:
            self._drop(conn)
        self._wake()

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        if conn in self._all:
            self._all.discard(conn)
            self._count -= 1

    def _evict_idle(self) -> bool:
        for conns in self._idle.values():
            if conns:
                self._drop(conns.pop(0))
                return True
        return False

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def stats(self) -> dict[str, Any]:
        """Open and idle connections (for tests and metrics)."""
        return {"open": self._count, "idle": sum(len(v) for v in self._idle.values())}


class LeanClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` on a ``LeanTransport`` that sends plain requests (no auth
    flow, no redirect to follow, not streamed) straight to the transport, calling the
    event hooks and skipping the rest of httpx's per-request machinery: cookie
    extraction, redirect and auth generators, the INFO log line. That machinery was a
    quarter of the dispatcher's CPU per message. Anything else goes through httpx's own
    ``send``. No cookies are kept from such responses (the provider's API is token-based)
    and no proxy is used (``trust_env`` is off)."""

    def __init__(self, *, transport: LeanTransport, timeout: httpx.Timeout) -> None:
        super().__init__(transport=transport, timeout=timeout, trust_env=False)
        self._lean = transport

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        plain = (
            not stream
            and self.auth is None
            and (auth is None or auth is httpx.USE_CLIENT_DEFAULT)
            and not (
                follow_redirects is True
                or (follow_redirects is httpx.USE_CLIENT_DEFAULT and self.follow_redirects)
            )
            and not self.is_closed
            and "timeout" in request.extensions
        )
        if not plain:
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        hooks = self.event_hooks
        for hook in hooks["request"]:
            await hook(request)
        response = await self._lean.handle_async_request(request)
        for hook in hooks["response"]:
            await hook(response)
        return response
