"""The FastAPI application behind ``pconv-serve`` (:func:`create_app`); the command line is :mod:`pconv.serve`.

Under load it stays responsive: one request runs on the model at a time and at most
``max_queue`` more wait (others get 503 with ``Retry-After``); uploads stay compressed while
they wait and are decoded only when their turn comes; a request whose work (pixels through the
model, known from the mask before the image is decoded) is over ``max_work_mp`` is answered 422
before any model work; work stops when its client disconnects; ``/api/health`` never waits for
the model. Requests from web pages of other origins are refused (403) unless ``allow_origins``
names them. Nothing is written to disk.
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
from PIL import Image, UnidentifiedImageError

from pconv.inpaint import DEFAULT_HOLE_DEPTH, Cancelled, inpaint, model_pixels
from pconv.masks import mask_from_image
from pconv.predict import decode_input, to_output_image

if TYPE_CHECKING:
    import torch

__all__ = ["RETRY_AFTER_S", "create_app"]

RETRY_AFTER_S = 5


def create_app(model: torch.nn.Module, *, device: torch.device | str = "cpu", weights_name: str = "model",
               max_upload_mb: float = 25.0, max_megapixels: float = 50.0, tile: int | str | None = "auto",
               scale: str | float = "auto", max_queue: int = 4, max_work_mp: float = 16.0,
               allow_origins: Sequence[str] = ()) -> FastAPI:
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
    """
    app = FastAPI(title="pconv", docs_url="/api/docs", openapi_url="/api/openapi.json")
    model = model.to(device).eval()
    app.state.cancel_all = threading.Event()  # set on shutdown: running work stops at its next tile
    queue = {"admitted": 0, "running": 0}
    slot: list[asyncio.Semaphore] = []  # created in the server's event loop
    channels = model.config.in_channels
    hole_depth = getattr(model, "hole_depth", None) or DEFAULT_HOLE_DEPTH
    limit = int(max_upload_mb * 2**20)
    page = resources.files("pconv").joinpath("static/index.html").read_text(encoding="utf-8")

    app.add_middleware(_Guard, limit=limit, max_upload_mb=max_upload_mb, allow_origins=tuple(allow_origins))

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
        except (UnidentifiedImageError, OSError) as err:
            raise HTTPException(400, f"the {what} is not an image Pillow can read ({err})") from None
        if img.width * img.height > max_megapixels * 1e6:
            raise HTTPException(413, f"the {what} has {img.width * img.height / 1e6:.1f} megapixels; the limit is "
                                     f"{max_megapixels:g}")
        return img

    def decode(img: Image.Image, what: str) -> None:
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise HTTPException(400, f"the {what} could not be decoded ({err})") from None

    def work(image_data: bytes, mask_data: bytes, invert_mask: bool, left: threading.Event) -> tuple[bytes, dict]:
        """Decode, check, inpaint and encode one request (in a worker thread, holding the model slot)."""
        img = open_upload(image_data, "image")
        mask_img = open_upload(mask_data, "mask")
        if mask_img.size != img.size:
            raise HTTPException(400, f"the mask is {mask_img.width}x{mask_img.height} but the image is "
                                     f"{img.width}x{img.height}")
        decode(mask_img, "mask")
        known, _ = mask_from_image(mask_img, invert_mask)
        del mask_img
        if not known.any():
            raise HTTPException(400, "the mask covers the whole image: there is nothing to inpaint from")
        if not known.all():
            needed = model_pixels(known, tile=tile, scale=scale, hole_depth=hole_depth,
                                  multiple=getattr(model, "multiple", 1))
            if needed > max_work_mp * 1e6:
                raise HTTPException(422, f"this request needs {needed / 1e6:.1f} megapixels of model work (the limit "
                                         f"is {max_work_mp:g}): send a smaller image or fewer, smaller holes")
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
            pixels = inpaint(model, source.pixels, known, tile=tile, scale=scale, device=device,
                             should_stop=lambda: left.is_set() or app.state.cancel_all.is_set()).image
        buffer = io.BytesIO()
        to_output_image(pixels, source).save(buffer, format="PNG")
        return buffer.getvalue(), headers

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/health")
    async def health() -> dict:
        """Answered on the event loop: never waits for the model."""
        return {"status": "ok", "model": weights_name, "architecture": type(model).__name__,
                "config": model.config.to_dict(), "device": str(device),
                "queue": {"running": queue["running"], "waiting": queue["admitted"] - queue["running"],
                          "max_waiting": max_queue},
                "limits": {"upload_mb": max_upload_mb, "megapixels": max_megapixels, "work_mp": max_work_mp}}

    @app.post("/api/inpaint", responses={200: {"content": {"image/png": {}}}})
    async def inpaint_endpoint(request: Request, image: UploadFile = File(...), mask: UploadFile = File(...),
                               invert_mask: bool = Form(False)) -> Response:
        """Multipart ``image`` and ``mask`` (white = hole, or alpha > 127 = hole); returns the PNG composite."""
        if queue["admitted"] >= max_queue + 1 or app.state.cancel_all.is_set():
            raise HTTPException(503, f"busy: {queue['admitted']} requests are running or waiting; try again shortly",
                                headers={"Retry-After": str(RETRY_AFTER_S)})
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
    POSTs from other origins (403) and over the upload limit by their ``Content-Length`` (413)."""

    def __init__(self, app, *, limit: int, max_upload_mb: float, allow_origins: tuple[str, ...]) -> None:
        self.app, self.limit, self.max_upload_mb, self.allow_origins = app, limit, max_upload_mb, allow_origins

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            origin, length = headers.get("origin"), headers.get("content-length")
            refusal = None
            if origin is not None and not _origin_allowed(origin, headers.get("host", ""), self.allow_origins):
                refusal = JSONResponse({"detail": f"requests from web pages at {origin} are not allowed; start the "
                                                  "server with --allow-origin to allow them"}, status_code=403)
            elif length is not None and length.isdigit() and int(length) > self.limit:
                refusal = JSONResponse({"detail": f"upload of {int(length) / 2**20:.1f} MB is over the limit of "
                                                  f"{self.max_upload_mb:g} MB"}, status_code=413)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _watch_disconnect(request: Request, left: threading.Event) -> None:
    """Set ``left`` when the client goes away (the work then stops at its next tile)."""
    while not left.is_set():
        if await request.is_disconnected():
            left.set()
            return
        await asyncio.sleep(0.1)


def _origin_allowed(origin: str, host: str, allowed: Sequence[str]) -> bool:
    """The page's own origin (same host and port as the request's ``Host``) or an allowed one."""
    if "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    return urlsplit(origin).netloc.lower() == host.lower()
