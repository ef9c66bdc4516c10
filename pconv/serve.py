"""A local web page and HTTP API to try a model (``pconv-serve``).

Open the page, drop a photo, paint the holes, press Inpaint. Programs use the API:

    curl -F image=@photo.jpg -F mask=@holes.png http://127.0.0.1:8000/api/inpaint -o filled.png
    curl http://127.0.0.1:8000/api/health

Uploads are read into memory (the multipart parser may spool large ones to a temporary file,
deleted when the request ends); nothing is written anywhere else. One model serves every
request: requests wait their turn instead of running side by side out of memory.
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError

from pconv.cli import SCALE_HELP, UsageError, resolve_device, run_main, scale_arg
from pconv.inpaint import inpaint
from pconv.io import DEFAULT_WEIGHTS, load_model
from pconv.masks import mask_from_image
from pconv.predict import decode_input, to_output_image

__all__ = ["create_app", "main"]


def create_app(model: torch.nn.Module, *, device: torch.device | str = "cpu", weights_name: str = "model",
               max_upload_mb: float = 25.0, max_megapixels: float = 50.0, tile: int | str | None = "auto",
               scale: str | float = "auto") -> FastAPI:
    """The FastAPI application serving ``model``: the page at ``/`` and the API under ``/api``.

    Args:
        model: an inpainting model (e.g. from :func:`pconv.load_model`).
        device: where it runs.
        weights_name: shown by ``/api/health``.
        max_upload_mb: requests larger than this are answered 413.
        max_megapixels: images with more pixels are answered 413 before they are decoded.
        tile: tiling of large images, as in ``predict.py --tile``.
        scale: working scale, as in ``predict.py --scale``.
    """
    app = FastAPI(title="pconv", docs_url="/api/docs", openapi_url="/api/openapi.json")
    model = model.to(device).eval()
    lock = threading.Lock()  # one model, one request at a time; the others wait in line
    channels = model.config.in_channels
    limit = int(max_upload_mb * 2**20)
    page = resources.files("pconv").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.middleware("http")
    async def upload_limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length is not None and length.isdigit() and int(length) > limit:
            return JSONResponse({"detail": f"upload of {int(length) / 2**20:.1f} MB is over the limit of "
                                           f"{max_upload_mb:g} MB"}, status_code=413)
        return await call_next(request)

    def open_upload(data: bytes, what: str) -> Image.Image:
        if len(data) > limit:
            raise HTTPException(413, f"{what} upload is over the limit of {max_upload_mb:g} MB")
        if not data:
            raise HTTPException(400, f"the {what} upload is empty")
        try:
            img = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, OSError) as err:
            raise HTTPException(400, f"the {what} is not an image Pillow can read ({err})") from None
        if img.width * img.height > max_megapixels * 1e6:
            raise HTTPException(413, f"the {what} has {img.width * img.height / 1e6:.1f} megapixels; the limit is "
                                     f"{max_megapixels:g}")
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise HTTPException(400, f"the {what} could not be decoded ({err})") from None
        return img

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "model": weights_name, "architecture": type(model).__name__,
                "config": model.config.to_dict(), "device": str(device),
                "limits": {"upload_mb": max_upload_mb, "megapixels": max_megapixels}}

    @app.post("/api/inpaint", responses={200: {"content": {"image/png": {}}}})
    def inpaint_endpoint(image: UploadFile = File(...), mask: UploadFile = File(...),
                         invert_mask: bool = Form(False)) -> Response:
        """Multipart ``image`` and ``mask`` (white = hole, or alpha > 127 = hole); returns the PNG composite."""
        try:
            img = open_upload(image.file.read(limit + 1), "image")
            mask_img = open_upload(mask.file.read(limit + 1), "mask")
        finally:
            image.file.close()
            mask.file.close()
        try:
            source = decode_input(img, channels)
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        known, _ = mask_from_image(mask_img, invert_mask)
        height, width = source.pixels.shape[:2]
        if known.shape != (height, width):
            raise HTTPException(400, f"the mask is {known.shape[1]}x{known.shape[0]} but the image is {width}x{height}")
        if not known.any():
            raise HTTPException(400, "the mask covers the whole image: there is nothing to inpaint from")
        headers = {}
        if known.all():
            pixels = source.pixels
            headers["X-Pconv-Warning"] = "the mask has no holes; the image is returned unchanged"
        else:
            with lock:
                pixels = inpaint(model, source.pixels, known, tile=tile, scale=scale, device=device).image
        buffer = io.BytesIO()
        to_output_image(pixels, source).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers=headers)

    return app


def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog="pconv-serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, help="release file (default: the project's released model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest request in MB (default 25)")
    p.add_argument("--max-megapixels", type=float, default=50.0, help="largest image in megapixels (default 50)")
    p.add_argument("--scale", type=scale_arg, default="auto", metavar="auto|FACTOR", help=SCALE_HELP)
    args = p.parse_args(argv)
    weights = args.weights or DEFAULT_WEIGHTS
    if not weights.is_file():
        raise UsageError(f"model file not found: {weights}" + ("" if args.weights else "; pass --weights FILE"))
    device = resolve_device(args.device)
    try:
        model = load_model(weights, device=device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    import uvicorn

    app = create_app(model, device=device, weights_name=weights.name, max_upload_mb=args.max_upload_mb,
                     max_megapixels=args.max_megapixels, scale=args.scale)
    print(f"serving {weights.name} on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``pconv-serve``)."""
    return run_main(_main, argv, "pconv-serve")


if __name__ == "__main__":
    sys.exit(main())
