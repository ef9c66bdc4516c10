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

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image

from pconv.devices import torch_device
from pconv.errors import InputError, PconvError, TooLargeError
from pconv.images import check_depth, decode_image, displayed_size, encode, load_oriented, open_image, to_output_image
from pconv.inpaint import Cancelled, inpaint
from pconv.masks import mask_from_image
from pconv.methods import METHODS, MODEL, available, load_method
from pconv.models import InpaintingModel
from pconv.options import InpaintOptions
from pconv.tiling import Plan, geometry_of_model, make_plan
from pconv.webguard import RequestGuard

if TYPE_CHECKING:
    import torch

__all__ = ["RETRY_AFTER_S", "Limits", "create_app"]

RETRY_AFTER_S = 5


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
    methods: Sequence[str] | None = None,
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
        max_work_mp: megapixels through the model per request (see :func:`pconv.tiling.make_plan`);
            more is answered 422 before any model work.
        allow_origins: web origins (``https://host:port``) besides the server's own whose pages may
            post work; ``"*"`` allows any.
        allowed_hosts: host names or addresses (without port) that requests may name in their
            ``Host`` header; others are answered 400. ``None`` accepts any (``pconv-serve`` passes
            the address it binds, and for loopback :data:`pconv.webguard.LOOPBACK_HOSTS`).
        methods: the methods of :data:`pconv.methods.METHODS` a request may choose (its ``method``
            field; ``model`` is ``model``); ``None``: every one that is installed.
    """
    # No /docs or /redoc pages: FastAPI's load their scripts from a CDN.
    app = FastAPI(title="pconv", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.cancel_all = threading.Event()  # set on shutdown: running work stops at its next tile
    limits = Limits(max_upload_mb, max_megapixels, max_queue, max_work_mp)
    models = {MODEL: model}  # the default of every request
    for name in available() if methods is None else methods:
        if name != MODEL:
            models[name] = load_method(name)
    app.state.methods = list(models)
    inpainter = _Inpainter(models, torch_device(device), options or InpaintOptions(), limits, app.state.cancel_all)
    hosts = None if allowed_hosts is None else frozenset(h.lower().strip("[]") for h in allowed_hosts)
    app.add_middleware(_Admission, inpainter=inpainter)  # inside the guard: a foreign Host is a 400 first
    app.add_middleware(
        RequestGuard,
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
        models: dict[str, InpaintingModel],
        device: torch.device,
        options: InpaintOptions,
        limits: Limits,
        cancel_all: threading.Event,
    ) -> None:
        self.models = {name: m.to(device).eval() for name, m in models.items()}
        self.model, self.device, self.options, self.limits = self.models[MODEL], device, options, limits
        self.cancel_all = cancel_all
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
            mask_img = load_oriented(mask_img)
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"the mask could not be decoded ({err})") from None
        known, _ = mask_from_image(mask_img, invert)
        if not known.any():
            raise InputError("the mask covers the whole image: there is nothing to inpaint from")
        return known

    def method(self, name: str) -> InpaintingModel:
        """The model of a request's ``method`` field: unknown 422, not installed 501, not served 422."""
        if name not in METHODS:
            raise _Unprocessable(f"unknown method {name!r}; choose from {', '.join(self.models)}")
        if name not in self.models:
            METHODS[name].require()
            raise _Unprocessable(f"this server does not offer the {name} method; choose from {', '.join(self.models)}")
        return self.models[name]

    def plan(self, known: np.ndarray, model: InpaintingModel) -> Plan:
        """Where the model will run; refused (422) when its work is over the budget, before any is done."""
        plan = make_plan(known, self.options, *geometry_of_model(model))
        needed = plan.pixels
        if needed > self.limits.work_mp * 1e6:
            raise _Unprocessable(
                f"this request needs {needed / 1e6:.1f} megapixels of model work (the limit "
                f"is {self.limits.work_mp:g}): send a smaller image or fewer, smaller holes"
            )
        return plan

    def __call__(
        self, image_data: bytes, mask_data: bytes, invert: bool, method: str, left: threading.Event
    ) -> tuple[bytes, dict]:
        model = self.method(method)
        img = self.open(image_data, "image")
        check_depth(img)
        known = self.known(mask_data, invert, displayed_size(img))
        plan = None if known.all() else self.plan(known, model)
        source = decode_image(img, model.in_channels)
        del img
        headers = {}
        if known.all():
            pixels = source.pixels
            headers["X-Pconv-Warning"] = "the mask has no holes; the image is returned unchanged"
        else:
            stop = lambda: left.is_set() or self.cancel_all.is_set()  # noqa: E731
            pixels = inpaint(
                model, source.pixels, known, self.options, device=self.device, should_stop=stop, plan=plan
            ).image
        return encode(to_output_image(pixels, source), "PNG"), headers


class _Unprocessable(PconvError):
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
            "methods": [{"name": name, "summary": METHODS[name].summary} for name in inpainter.models],
            "queue": {
                "running": inpainter.running,
                "waiting": inpainter.admitted - inpainter.running,
                "max_waiting": limits.queue,
            },
            "limits": {"upload_mb": limits.upload_mb, "megapixels": limits.megapixels, "work_mp": limits.work_mp},
        }

    @app.post("/api/inpaint", responses={200: {"content": {"image/png": {}}}})
    async def inpaint_endpoint(
        request: Request,
        image: UploadFile = File(...),
        mask: UploadFile = File(...),
        invert_mask: bool = Form(False),
        method: str = Form(MODEL),
    ) -> Response:
        """Multipart ``image`` and ``mask`` (white = hole, or alpha > 127 = hole) and optionally the
        ``method`` (``model``, the default, or one that ``/api/health`` lists); returns the PNG composite.
        (Admission, 503 when the queue is full, is decided before the body is read: :class:`_Admission`.)"""
        try:
            try:
                inpainter.method(method)  # an unknown method before the uploads are read
            except PconvError as err:
                raise HTTPException(err.status, str(err)) from None
            image_data = await image.read(limits.upload_bytes + 1)
            mask_data = await mask.read(limits.upload_bytes + 1)
        finally:
            await image.close()
            await mask.close()
        return await _run(request, inpainter, image_data, mask_data, invert_mask, method)


class _Admission:
    """Pure ASGI middleware: a POST to ``/api/inpaint`` is admitted (counted in
    ``inpainter.admitted``) or answered 503 with ``Retry-After`` before a byte of its body is read,
    so a full queue costs the server nothing per refused upload."""

    def __init__(self, app, *, inpainter: _Inpainter) -> None:
        self.app, self.inpainter = app, inpainter

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/api/inpaint":
            await self.app(scope, receive, send)
            return
        inpainter = self.inpainter
        if inpainter.admitted >= inpainter.limits.queue + 1 or inpainter.cancel_all.is_set():
            busy = (
                "the server is shutting down"
                if inpainter.cancel_all.is_set()
                else (f"busy: {inpainter.admitted} requests are running or waiting; try again shortly")
            )
            refusal = JSONResponse({"detail": busy}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
            await refusal(scope, receive, send)
            return
        inpainter.admitted += 1
        try:
            await self.app(scope, receive, send)
        finally:
            inpainter.admitted -= 1


async def _run(
    request: Request, inpainter: _Inpainter, image_data: bytes, mask_data: bytes, invert: bool, method: str
) -> Response:
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
            content, headers = await run_in_threadpool(inpainter, image_data, mask_data, invert, method, left)
        except PconvError as err:
            raise HTTPException(err.status, str(err)) from None
        except Cancelled:
            return JSONResponse({"detail": "cancelled"}, status_code=499 if left.is_set() else 503)
        except asyncio.CancelledError:  # the server's graceful shutdown ran out: answer, never a 500
            inpainter.cancel_all.set()  # the worker thread stops at its next tile
            return JSONResponse(
                {"detail": "the server is shutting down"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        finally:
            inpainter.running -= 1
            watcher.cancel()
    return Response(content, media_type="image/png", headers=headers)


async def _watch_disconnect(request: Request, left: threading.Event) -> None:
    """Set ``left`` when the client goes away (the work then stops at its next tile)."""
    while not left.is_set():
        if await request.is_disconnected():
            left.set()
            return
        await asyncio.sleep(0.1)
