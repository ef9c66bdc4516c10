"""What protects the web server below the application: the request guard (allowed hosts, allowed
origins, upload size while it streams) and the server's own limits on connections.

Connections are limited by what they cost, not by their number: a connection that has not
finished its request's headers (or sits idle between requests) is cheap and can be evicted, so
an attacker's idle sockets are closed (the oldest first, beyond :data:`IDLE_PER_CLIENT` from one
address or :data:`MAX_CONNECTIONS` in all) rather than starving everyone else; headers must
arrive within :data:`HEADER_TIMEOUT_S`; a request body must keep arriving at
:data:`MIN_BODY_RATE` bytes a second after :data:`BODY_GRACE_S` seconds. Work itself is bounded
by the application (one request on the model, a bounded queue, decided before any body is read).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse

__all__ = [
    "BODY_GRACE_S",
    "HEADER_TIMEOUT_S",
    "IDLE_PER_CLIENT",
    "LOOPBACK_HOSTS",
    "MAX_CONNECTIONS",
    "MIN_BODY_RATE",
    "RequestGuard",
    "server_config",
]

# A connection must deliver a request's headers within this many seconds.
HEADER_TIMEOUT_S = 10.0
# Connections in all (file descriptors): beyond this, the oldest idle one is closed for a new one.
MAX_CONNECTIONS = 1024
# Idle connections (headers not finished, or between requests) from one address: beyond this,
# that address's oldest idle connection is closed.
IDLE_PER_CLIENT = 32
# A request body may take this long to start; then it must average MIN_BODY_RATE bytes a second.
BODY_GRACE_S = 10.0
MIN_BODY_RATE = 16 * 1024
# The names of this machine on the loopback interface: the Host allow-list of a server bound there.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class RequestGuard:
    """Pure ASGI middleware (so ``request.is_disconnected()`` keeps working behind it): refuses
    requests naming a host not allowed (400), POSTs from other origins (403), and uploads over
    the limit (413): by their ``Content-Length`` at once, or while the body streams."""

    def __init__(
        self,
        app,
        *,
        limit: int,
        max_upload_mb: float,
        allow_origins: tuple[str, ...],
        allowed_hosts: frozenset[str] | None,
    ) -> None:
        self.app, self.limit, self.max_upload_mb = app, limit, max_upload_mb
        self.allow_origins, self.allowed_hosts = allow_origins, allowed_hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = None
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            refusal = JSONResponse(
                {
                    "detail": f"this server is not reached as {host or 'an unnamed host'}; start it "
                    "with --allow-host to allow that name"
                },
                status_code=400,
            )
        elif scope["method"] == "POST":
            origin, length = headers.get("origin"), headers.get("content-length")
            if origin is not None and not _origin_allowed(origin, host, self.allow_origins):
                refusal = JSONResponse(
                    {
                        "detail": f"requests from web pages at {origin} are not allowed; start the "
                        "server with --allow-origin to allow them"
                    },
                    status_code=403,
                )
            elif length is not None and length.isdigit() and int(length) > self.limit:
                refusal = self._too_large()
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        await self._limited(scope, receive, send)

    def _too_large(self) -> JSONResponse:
        """413, closing the connection: the rest of the body is never read."""
        return JSONResponse(
            {"detail": f"the upload is over the limit of {self.max_upload_mb:g} MB"},
            status_code=413,
            headers={"Connection": "close"},
        )

    async def _limited(self, scope, receive, send) -> None:
        """Run the app with the body counted as it arrives: past the limit, answer 413 and tell
        the app the client has gone (what it sends after that is dropped)."""
        received, refused, started = 0, False, False

        async def counted_receive() -> dict:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not started:
                        await self._too_large()(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if refused:
                return
            started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)


# A Host header (RFC 9110): a bracketed IPv6 address or a name / IPv4 address, then an optional
# numeric port. Anything else (``localhost:evil.example``, a list) names no host: ``""``.
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::[0-9]{1,5})?")


def _host_name(host: str) -> str:
    """The name or address of a ``Host`` header, without port or IPv6 brackets, lower case; ``""``
    for a header that is not one host (and so matches no allowed name)."""
    match = _HOST.fullmatch(host.strip().lower())
    return "" if match is None else match["ipv6"] or match["name"]


def server_config(
    app: FastAPI,
    *,
    host: str,
    port: int,
    header_timeout: float = HEADER_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    idle_per_client: int = IDLE_PER_CLIENT,
    body_grace: float = BODY_GRACE_S,
    min_body_rate: float = MIN_BODY_RATE,
    **options: object,
):
    """The ``uvicorn.Config`` to serve ``app``: h11 with the connection limits of this module and a
    5-second idle timeout between requests. (uvicorn's own ``limit_concurrency`` counts idle sockets
    too, so a few dozen of them would turn every request away: it is not used.)"""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_guarded_protocol(header_timeout, max_connections, idle_per_client, body_grace, min_body_rate),
        timeout_keep_alive=5,
        **options,
    )


def _guarded_protocol(
    header_timeout: float, max_connections: int, idle_per_client: int, body_grace: float, min_body_rate: float
) -> type:
    """uvicorn's h11 protocol with deadlines for headers and bodies and eviction of idle connections."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    live: dict[Guarded, None] = {}  # every open connection of this server, oldest first

    class Guarded(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _watch: asyncio.TimerHandle | None = None
        _idle_since = 0.0
        _body_start = 0.0
        _body_bytes = 0

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._idle_since = self.loop.time()
            live[self] = None
            self._evict()
            self._arm()

        def data_received(self, data: bytes) -> None:
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                self._body_bytes += len(data)
            super().data_received(data)
            now = self.conn.their_state
            if now is h11.IDLE:  # headers still incomplete
                self._arm()
                return
            self._disarm()
            if now is h11.SEND_BODY and state is not h11.SEND_BODY:  # the body starts
                self._body_start, self._body_bytes = self.loop.time(), 0
                self._watch = self.loop.call_later(1.0, self._check_body)

        def connection_lost(self, exc: Exception | None) -> None:
            live.pop(self, None)
            self._disarm()
            if self._watch is not None:
                self._watch.cancel()
            super().connection_lost(exc)

        def _idle(self) -> bool:
            return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

        def _evict(self) -> None:
            """Close the oldest idle connections beyond the per-address and the total bounds."""
            address = self.client[0] if self.client else None
            mine = [c for c in live if c.client and c.client[0] == address and c._idle()]
            for old in mine[: max(0, len(mine) - idle_per_client)]:
                old.transport.close()
            excess = len(live) - max_connections
            if excess > 0:
                for old in [c for c in live if c._idle() and c is not self][:excess]:
                    old.transport.close()

        def _arm(self) -> None:
            if self._deadline is None:
                self._idle_since = self.loop.time()
                self._deadline = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self._idle():
                self.transport.close()

        def _check_body(self) -> None:
            """Close a connection whose request body arrives slower than the minimum rate."""
            self._watch = None
            if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
                return
            late = self.loop.time() - self._body_start - body_grace
            if late > 0 and self._body_bytes < late * min_body_rate:
                self.transport.close()
                return
            self._watch = self.loop.call_later(1.0, self._check_body)

    return Guarded


def _origin_allowed(origin: str, host: str, allowed: Sequence[str]) -> bool:
    """The page's own origin (same host and port as the request's ``Host``) or an allowed one."""
    if "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    return urlsplit(origin).netloc.lower() == host.lower()
