"""The FastAPI application behind ``pconv-serve`` (:func:`create_app`); the command line is :mod:`pconv.serve`.

Under load it stays responsive: one request runs on the model at a time and at most
``max_queue`` more wait (others get 503 with ``Retry-After``); uploads stay compressed while
they wait and are decoded only when their turn comes; a request whose work (pixels through the
model, known from the mask before the image is decoded) is over ``max_work_mp`` is answered 422
before any model work; work stops when its client disconnects; ``/api/health`` never waits for
the model. Requests from web pages of other origins are refused (403) unless ``allow_origins``
names them; requests whose ``Host`` is not one the server is meant to be reached at are refused
(400: a page on another site whose name resolves to this machine, DNS rebinding, cannot use it).
Uploads are counted while they stream, whatever their framing (``Content-Length`` or chunked): the
request is answered 413 as soon as it passes ``max_upload_mb``, so no more than that reaches the
form parser or its temporary files. :func:`server_config` adds what the ASGI app cannot do: a
deadline for a request's headers (a client that opens connections and never finishes them is
disconnected), an idle timeout and a bound on connections. The page and its API documentation
(``/api/openapi.json``) load nothing from other sites. Nothing is written to disk but the form
parser's bounded temporary files.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, ImageOps

from pconv.devices import torch_device
from pconv.errors import InputError, PconvError, TooLargeError
from pconv.images import check_depth, decode_image, displayed_size, encode, open_image, to_output_image
from pconv.inpaint import Cancelled, inpaint
from pconv.masks import mask_from_image
from pconv.models import InpaintingModel
from pconv.options import InpaintOptions
from pconv.tiling import DEFAULT_HOLE_DEPTH, model_pixels

if TYPE_CHECKING:
    import torch

__all__ = [
    "HEADER_TIMEOUT_S",
    "LOOPBACK_HOSTS",
    "MAX_CONNECTIONS",
    "RETRY_AFTER_S",
    "Limits",
    "create_app",
    "server_config",
]

RETRY_AFTER_S = 5
# A connection must deliver a request's headers within this many seconds.
HEADER_TIMEOUT_S = 10.0
# Open connections beyond this are answered 503 at once.
MAX_CONNECTIONS = 64
# The names of this machine on the loopback interface: the Host allow-list of a server bound there.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def create_app(
    model: InpaintingModel,
    *,
    device: torch.device | str = "cpu",
    weights_name: str = "model",
    options: InpaintOptions | None = None,
    max_upload_mb: float = 25.0,
    max_megapixels: float = 50.0,
    max_queue: int = 4,
    max_work_mp: float = 16.0,
    allow_origins: Sequence[str] = (),
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The FastAPI application serving ``model``: the page at ``/`` and the API under ``/api``.

    Args:
        model: an inpainting model (e.g. from :func:`pconv.load_model`).
        device: where it runs.
        weights_name: shown by ``/api/health``.
        options: tiles and working scale, as in ``predict.py`` (Monte Carlo samples are not served).
        max_upload_mb: requests larger than this are answered 413.
        max_megapixels: images with more pixels are answered 413 before they are decoded.
        max_queue: requests that may wait while one runs; more are answered 503.
        max_work_mp: megapixels through the model per request (see :func:`pconv.tiling.model_pixels`);
            more is answered 422 before any model work.
        allow_origins: web origins (``https://host:port``) besides the server's own whose pages may
            post work; ``"*"`` allows any.
        allowed_hosts: host names or addresses (without port) that requests may name in their
            ``Host`` header; others are answered 400. ``None`` accepts any (``pconv-serve`` passes
            the address it binds, and for loopback :data:`LOOPBACK_HOSTS`).
    """
    # No /docs or /redoc pages: FastAPI's load their scripts from a CDN.
    app = FastAPI(title="pconv", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.cancel_all = threading.Event()  # set on shutdown: running work stops at its next tile
    limits = Limits(max_upload_mb, max_megapixels, max_queue, max_work_mp)
    inpainter = _Inpainter(model, torch_device(device), options or InpaintOptions(), limits, app.state.cancel_all)
    hosts = None if allowed_hosts is None else frozenset(h.lower().strip("[]") for h in allowed_hosts)
    app.add_middleware(
        _Guard,
        limit=limits.upload_bytes,
        max_upload_mb=max_upload_mb,
        allow_origins=tuple(allow_origins),
        allowed_hosts=hosts,
    )
    _add_routes(app, inpainter, weights_name)
    return app


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (see :func:`create_app`)."""

    upload_mb: float = 25.0
    megapixels: float = 50.0
    queue: int = 4
    work_mp: float = 16.0

    @property
    def upload_bytes(self) -> int:
        return int(self.upload_mb * 2**20)


class _Inpainter:
    """The model behind the API: checks, decodes, inpaints and encodes one request at a time (in
    a worker thread, holding the model slot); counts the requests running and waiting."""

    def __init__(
        self,
        model: InpaintingModel,
        device: torch.device,
        options: InpaintOptions,
        limits: Limits,
        cancel_all: threading.Event,
    ) -> None:
        self.model, self.device, self.options, self.limits = model.to(device).eval(), device, options, limits
        self.cancel_all = cancel_all
        self.hole_depth = options.hole_depth or model.hole_depth or DEFAULT_HOLE_DEPTH
        self.admitted = self.running = 0
        self.slot: asyncio.Semaphore | None = None  # created in the server's event loop

    def open(self, data: bytes, what: str) -> Image.Image:
        """An upload's header only (no pixels decoded yet); size limits checked."""
        if len(data) > self.limits.upload_bytes:
            raise TooLargeError(f"the {what} upload is over the limit of {self.limits.upload_mb:g} MB")
        return open_image(data, what, self.limits.megapixels)

    def known(self, mask_data: bytes, invert: bool, size: tuple[int, int]) -> np.ndarray:
        """The mask as shown (EXIF orientation applied), checked against the image's displayed size."""
        mask_img = self.open(mask_data, "mask")
        mask_size = displayed_size(mask_img)
        if mask_size != size:  # as shown: EXIF orientation applied
            raise InputError(
                f"the mask is {mask_size[0]}x{mask_size[1]} but the image is {size[0]}x{size[1]} (as displayed)"
            )
        try:
            mask_img.load()
            mask_img = ImageOps.exif_transpose(mask_img)
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"the mask could not be decoded ({err})") from None
        known, _ = mask_from_image(mask_img, invert)
        if not known.any():
            raise InputError("the mask covers the whole image: there is nothing to inpaint from")
        return known

    def check_work(self, known: np.ndarray) -> None:
        """Refuse (422) a request whose model work is over the budget, before any is done."""
        needed = model_pixels(known, self.options, self.hole_depth, self.model.multiple)
        if needed > self.limits.work_mp * 1e6:
            raise _OverBudget(
                f"this request needs {needed / 1e6:.1f} megapixels of model work (the limit "
                f"is {self.limits.work_mp:g}): send a smaller image or fewer, smaller holes"
            )

    def __call__(self, image_data: bytes, mask_data: bytes, invert: bool, left: threading.Event) -> tuple[bytes, dict]:
        img = self.open(image_data, "image")
        check_depth(img)
        known = self.known(mask_data, invert, displayed_size(img))
        if not known.all():
            self.check_work(known)
        source = decode_image(img, self.model.in_channels)
        del img
        headers = {}
        if known.all():
            pixels = source.pixels
            headers["X-Pconv-Warning"] = "the mask has no holes; the image is returned unchanged"
        else:
            stop = lambda: left.is_set() or self.cancel_all.is_set()  # noqa: E731
            pixels = inpaint(self.model, source.pixels, known, self.options, device=self.device, should_stop=stop).image
        return encode(to_output_image(pixels, source), "PNG"), headers


class _OverBudget(PconvError):
    status = 422


def _add_routes(app: FastAPI, inpainter: _Inpainter, weights_name: str) -> None:
    """The page, ``/api/health`` and ``/api/inpaint``."""
    page = resources.files("pconv").joinpath("static/index.html").read_text(encoding="utf-8")
    limits, model = inpainter.limits, inpainter.model

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/health")
    async def health() -> dict:
        """Answered on the event loop: never waits for the model."""
        return {
            "status": "ok",
            "model": weights_name,
            "architecture": type(model).__name__,
            "config": model.config.to_dict(),
            "device": str(inpainter.device),
            "queue": {
                "running": inpainter.running,
                "waiting": inpainter.admitted - inpainter.running,
                "max_waiting": limits.queue,
            },
            "limits": {"upload_mb": limits.upload_mb, "megapixels": limits.megapixels, "work_mp": limits.work_mp},
        }

    @app.post("/api/inpaint", responses={200: {"content": {"image/png": {}}}})
    async def inpaint_endpoint(
        request: Request, image: UploadFile = File(...), mask: UploadFile = File(...), invert_mask: bool = Form(False)
    ) -> Response:
        """Multipart ``image`` and ``mask`` (white = hole, or alpha > 127 = hole); returns the PNG composite."""
        if inpainter.admitted >= limits.queue + 1 or inpainter.cancel_all.is_set():
            raise HTTPException(
                503,
                f"busy: {inpainter.admitted} requests are running or waiting; try again shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        inpainter.admitted += 1
        try:
            try:
                image_data = await image.read(limits.upload_bytes + 1)
                mask_data = await mask.read(limits.upload_bytes + 1)
            finally:
                await image.close()
                await mask.close()
            return await _run(request, inpainter, image_data, mask_data, invert_mask)
        finally:
            inpainter.admitted -= 1


async def _run(request: Request, inpainter: _Inpainter, image_data: bytes, mask_data: bytes, invert: bool) -> Response:
    """Wait for the model slot, then run the request in a worker thread; stop it if its client leaves."""
    if inpainter.slot is None:
        inpainter.slot = asyncio.Semaphore(1)
    async with inpainter.slot:
        left = threading.Event()
        if inpainter.cancel_all.is_set():
            raise HTTPException(503, "the server is shutting down", headers={"Retry-After": str(RETRY_AFTER_S)})
        if await request.is_disconnected():
            return Response(status_code=499)
        inpainter.running += 1
        watcher = asyncio.create_task(_watch_disconnect(request, left))
        try:
            content, headers = await run_in_threadpool(inpainter, image_data, mask_data, invert, left)
        except PconvError as err:
            raise HTTPException(err.status, str(err)) from None
        except Cancelled:
            return JSONResponse({"detail": "cancelled"}, status_code=499 if left.is_set() else 503)
        finally:
            inpainter.running -= 1
            watcher.cancel()
    return Response(content, media_type="image/png", headers=headers)


class _Guard:
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


async def _watch_disconnect(request: Request, left: threading.Event) -> None:
    """Set ``left`` when the client goes away (the work then stops at its next tile)."""
    while not left.is_set():
        if await request.is_disconnected():
            left.set()
            return
        await asyncio.sleep(0.1)


def _host_name(host: str) -> str:
    """The name or address of a ``Host`` header, without port or IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


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
