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
import io
import threading
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, ImageOps, UnidentifiedImageError

from pconv.cli import UsageError
from pconv.inpaint import DEFAULT_HOLE_DEPTH, Cancelled, inpaint, model_pixels
from pconv.masks import mask_from_image
from pconv.predict import check_depth, decode_input, displayed_size, save_options, to_output_image

if TYPE_CHECKING:
    import torch

__all__ = ["HEADER_TIMEOUT_S", "LOOPBACK_HOSTS", "MAX_CONNECTIONS", "RETRY_AFTER_S", "create_app", "server_config"]

RETRY_AFTER_S = 5
# A connection must deliver a request's headers within this many seconds.
HEADER_TIMEOUT_S = 10.0
# Open connections beyond this are answered 503 at once.
MAX_CONNECTIONS = 64
# The names of this machine on the loopback interface: the Host allow-list of a server bound there.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def create_app(
    model: torch.nn.Module,
    *,
    device: torch.device | str = "cpu",
    weights_name: str = "model",
    max_upload_mb: float = 25.0,
    max_megapixels: float = 50.0,
    tile: int | str | None = "auto",
    scale: str | float = "auto",
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
        max_upload_mb: requests larger than this are answered 413.
        max_megapixels: images with more pixels are answered 413 before they are decoded.
        tile: tiling of large images, as in ``predict.py --tile``.
        scale: working scale, as in ``predict.py --scale``.
        max_queue: requests that may wait while one runs; more are answered 503.
        max_work_mp: megapixels through the model per request (see :func:`pconv.inpaint.model_pixels`);
            more is answered 422 before any model work.
        allow_origins: web origins (``https://host:port``) besides the server's own whose pages may
            post work; ``"*"`` allows any.
        allowed_hosts: host names or addresses (without port) that requests may name in their
            ``Host`` header; others are answered 400. ``None`` accepts any (``pconv-serve`` passes
            the address it binds, and for loopback :data:`LOOPBACK_HOSTS`).
    """
    # No /docs or /redoc pages: FastAPI's load their scripts from a CDN.
    app = FastAPI(title="pconv", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    model = model.to(device).eval()
    app.state.cancel_all = threading.Event()  # set on shutdown: running work stops at its next tile
    queue = {"admitted": 0, "running": 0}
    slot: list[asyncio.Semaphore] = []  # created in the server's event loop
    channels = model.config.in_channels
    hole_depth = getattr(model, "hole_depth", None) or DEFAULT_HOLE_DEPTH
    limit = int(max_upload_mb * 2**20)
    page = resources.files("pconv").joinpath("static/index.html").read_text(encoding="utf-8")

    hosts = None if allowed_hosts is None else frozenset(h.lower().strip("[]") for h in allowed_hosts)
    app.add_middleware(
        _Guard, limit=limit, max_upload_mb=max_upload_mb, allow_origins=tuple(allow_origins), allowed_hosts=hosts
    )

    def open_upload(data: bytes, what: str) -> Image.Image:
        """The image's header only (no pixels decoded yet); limits checked."""
        if len(data) > limit:
            raise HTTPException(413, f"{what} upload is over the limit of {max_upload_mb:g} MB")
        if not data:
            raise HTTPException(400, f"the {what} upload is empty")
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:
            raise HTTPException(413, f"the {what} is too large to decode safely ({err})") from None
        except UnidentifiedImageError:  # its message shows the buffer's memory address
            raise HTTPException(400, f"the {what} is not an image Pillow can read") from None
        except OSError as err:
            raise HTTPException(400, f"the {what} is not an image Pillow can read ({err})") from None
        if img.width * img.height > max_megapixels * 1e6:
            raise HTTPException(
                413, f"the {what} has {img.width * img.height / 1e6:.1f} megapixels; the limit is {max_megapixels:g}"
            )
        return img

    def decode(img: Image.Image, what: str) -> None:
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise HTTPException(400, f"the {what} could not be decoded ({err})") from None

    def work(image_data: bytes, mask_data: bytes, invert_mask: bool, left: threading.Event) -> tuple[bytes, dict]:
        """Decode, check, inpaint and encode one request (in a worker thread, holding the model slot)."""
        img = open_upload(image_data, "image")
        try:
            check_depth(img)
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        mask_img = open_upload(mask_data, "mask")
        (width, height), (mask_width, mask_height) = displayed_size(img), displayed_size(mask_img)
        if (mask_width, mask_height) != (width, height):  # as shown: EXIF orientation applied
            raise HTTPException(
                400, f"the mask is {mask_width}x{mask_height} but the image is {width}x{height} (as displayed)"
            )
        decode(mask_img, "mask")
        mask_img = ImageOps.exif_transpose(mask_img)
        known, _ = mask_from_image(mask_img, invert_mask)
        del mask_img
        if not known.any():
            raise HTTPException(400, "the mask covers the whole image: there is nothing to inpaint from")
        if not known.all():
            needed = model_pixels(
                known, tile=tile, scale=scale, hole_depth=hole_depth, multiple=getattr(model, "multiple", 1)
            )
            if needed > max_work_mp * 1e6:
                raise HTTPException(
                    422,
                    f"this request needs {needed / 1e6:.1f} megapixels of model work (the limit "
                    f"is {max_work_mp:g}): send a smaller image or fewer, smaller holes",
                )
        decode(img, "image")
        try:
            source = decode_input(img, channels)
        except (ValueError, UsageError) as err:
            raise HTTPException(400, str(err)) from None
        del img
        headers = {}
        if known.all():
            pixels = source.pixels
            headers["X-Pconv-Warning"] = "the mask has no holes; the image is returned unchanged"
        else:
            pixels = inpaint(
                model,
                source.pixels,
                known,
                tile=tile,
                scale=scale,
                device=device,
                should_stop=lambda: left.is_set() or app.state.cancel_all.is_set(),
            ).image
        buffer = io.BytesIO()
        to_output_image(pixels, source).save(buffer, format="PNG", **save_options("PNG"))
        return buffer.getvalue(), headers

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
            "device": str(device),
            "queue": {
                "running": queue["running"],
                "waiting": queue["admitted"] - queue["running"],
                "max_waiting": max_queue,
            },
            "limits": {"upload_mb": max_upload_mb, "megapixels": max_megapixels, "work_mp": max_work_mp},
        }

    @app.post("/api/inpaint", responses={200: {"content": {"image/png": {}}}})
    async def inpaint_endpoint(
        request: Request, image: UploadFile = File(...), mask: UploadFile = File(...), invert_mask: bool = Form(False)
    ) -> Response:
        """Multipart ``image`` and ``mask`` (white = hole, or alpha > 127 = hole); returns the PNG composite."""
        if queue["admitted"] >= max_queue + 1 or app.state.cancel_all.is_set():
            raise HTTPException(
                503,
                f"busy: {queue['admitted']} requests are running or waiting; try again shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        queue["admitted"] += 1
        try:
            try:
                image_data, mask_data = await image.read(limit + 1), await mask.read(limit + 1)
            finally:
                await image.close()
                await mask.close()
            if not slot:
                slot.append(asyncio.Semaphore(1))
            async with slot[0]:
                left = threading.Event()
                if app.state.cancel_all.is_set():
                    raise HTTPException(503, "the server is shutting down", headers={"Retry-After": str(RETRY_AFTER_S)})
                if await request.is_disconnected():
                    return Response(status_code=499)
                queue["running"] += 1
                watcher = asyncio.create_task(_watch_disconnect(request, left))
                try:
                    content, headers = await run_in_threadpool(work, image_data, mask_data, invert_mask, left)
                except Cancelled:
                    status = 499 if left.is_set() else 503
                    return JSONResponse({"detail": "cancelled"}, status_code=status)
                finally:
                    queue["running"] -= 1
                    watcher.cancel()
        finally:
            queue["admitted"] -= 1
        return Response(content, media_type="image/png", headers=headers)

    return app


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
