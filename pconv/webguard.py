"""What protects the web server below the application: the request guard (allowed hosts, allowed
origins, upload size while it streams) and the server's own limits (a deadline for request
headers, an idle timeout, a bound on connections)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse

__all__ = ["HEADER_TIMEOUT_S", "LOOPBACK_HOSTS", "MAX_CONNECTIONS", "RequestGuard", "server_config"]

# A connection must deliver a request's headers within this many seconds.
HEADER_TIMEOUT_S = 10.0
# Open connections beyond this are answered 503 at once.
MAX_CONNECTIONS = 64
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
    **options: object,
):
    """The ``uvicorn.Config`` to serve ``app``: h11 with a deadline for each request's headers,
    a 5-second idle timeout between requests, and at most ``max_connections`` connections."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_header_deadline_protocol(header_timeout),
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
        **options,
    )


def _header_deadline_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete
    ``seconds`` after it opened or after the request's first bytes (a slow-headers attack holds
    a connection forever otherwise; the keep-alive timeout only covers idle connections)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # headers still incomplete
                self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


def _origin_allowed(origin: str, host: str, allowed: Sequence[str]) -> bool:
    """The page's own origin (same host and port as the request's ``Host``) or an allowed one."""
    if "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    return urlsplit(origin).netloc.lower() == host.lower()
