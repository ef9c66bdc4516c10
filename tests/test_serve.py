"""pconv-serve: the HTTP API against a running server, and the page in a real headless browser."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from conftest import synthetic_photo
from PIL import Image, ImageOps

from pconv import PConvUNet
from pconv.errors import MissingExtraError
from pconv.inpaint import inpaint
from pconv.methods import MODEL, available
from pconv.options import InpaintOptions
from pconv.serve import allowed_hosts, create_app
from pconv.webguard import server_config

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _running(app, **options) -> Iterator[str]:
    port = _free_port()
    srv = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    torch.manual_seed(0)
    app = create_app(
        PConvUNet(depth=3, base_width=4),
        weights_name="tiny",
        max_upload_mb=1.0,
        max_megapixels=0.1,
        max_queue=16,
        max_work_mp=0.05,
    )
    with _running(app) as url:
        yield url


def _post(url: str, image: bytes, mask: bytes) -> httpx.Response:
    return httpx.post(f"{url}/api/inpaint", files={"image": ("i.png", image), "mask": ("m.png", mask)}, timeout=60)


def test_health_reports_the_model(server):
    r = httpx.get(f"{server}/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["architecture"] == "PConvUNet" and body["device"] == "cpu"
    assert body["config"]["depth"] == 3


def test_the_web_api_offers_and_runs_every_installed_method(server):
    offered = [m["name"] for m in httpx.get(f"{server}/api/health").json()["methods"]]
    assert offered == available()
    image = synthetic_photo(48, 64)
    known = np.ones((48, 64), bool)
    known[12:30, 20:44] = False
    files = {"image": ("i.png", _png(image)), "mask": ("m.png", _png(np.where(known, 0, 255).astype(np.uint8)))}
    for name in offered:
        r = httpx.post(f"{server}/api/inpaint", files=files, data={"method": name}, timeout=60)
        assert r.status_code == 200, (name, r.text)
        out = np.asarray(Image.open(io.BytesIO(r.content)))
        if name != MODEL:
            assert np.array_equal(out, inpaint(name, image, known).image), name
        else:
            assert np.array_equal(out[known], image[known])
    r = httpx.post(f"{server}/api/inpaint", files=files, data={"method": "lama"}, timeout=60)
    assert r.status_code == 422 and "unknown method 'lama'" in r.json()["detail"]
    torch.manual_seed(0)
    with _running(create_app(PConvUNet(depth=3, base_width=4), methods=["telea"])) as url:
        assert [m["name"] for m in httpx.get(f"{url}/api/health").json()["methods"]] == [MODEL, "telea"]
        r = httpx.post(f"{url}/api/inpaint", files=files, data={"method": "ns"}, timeout=60)
        assert r.status_code == 422 and "does not offer the ns method" in r.json()["detail"]
    with pytest.raises(MissingExtraError, match="patchmatch"):
        _without_patchmatch(lambda: create_app(PConvUNet(depth=3, base_width=4), methods=["patchmatch"]))


def _without_patchmatch(fn):
    """``fn()`` as on a machine without PyPatchMatch."""
    real = importlib.util.find_spec
    with mock.patch.object(
        importlib.util, "find_spec", lambda name, *a: None if name == "patchmatch" else real(name, *a)
    ):
        return fn()


def test_inpaint_returns_a_png_that_keeps_known_pixels(server):
    image = synthetic_photo(48, 64, noise=0)
    holes = np.zeros((48, 64), np.uint8)
    holes[10:30, 20:40] = 255
    r = _post(server, _png(image), _png(holes))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    out = np.asarray(Image.open(io.BytesIO(r.content)))
    known = holes == 0
    assert out.shape == image.shape and np.array_equal(out[known], image[known])
    assert not np.array_equal(out[~known], image[~known])


def test_page_is_served(server):
    r = httpx.get(server)
    assert r.status_code == 200 and 'id="maskCanvas"' in r.text and "/api/inpaint" in r.text


@pytest.mark.parametrize(
    "case, status, message",
    [
        ("not an image", 400, "not an image"),
        ("mask size", 400, "the mask is 10x10 but the image is 64x48 (as displayed)"),
        ("all holes", 400, "covers the whole image"),
        ("too large", 413, "over the limit of 1 MB"),
        ("too many pixels", 413, "megapixels; the limit is 0.1"),
        ("too much work", 422, "megapixels of model work (the limit is 0.05)"),
        ("decompression bomb", 413, "too large to decode safely"),
        ("corrupt image", 400, "could not be decoded"),
        ("corrupt mask", 400, "could not be decoded"),
    ],
)
def test_bad_requests_are_answered_with_the_reason(server, case, status, message):
    image, mask = _png(synthetic_photo(48, 64, noise=0)), _png(np.zeros((48, 64), np.uint8))
    if case == "not an image":
        image = b"hello, not an image"
    elif case == "mask size":
        mask = _png(np.zeros((10, 10), np.uint8))
    elif case == "all holes":
        mask = _png(np.full((48, 64), 255, np.uint8))
    elif case == "too large":
        image = np.random.default_rng(0).bytes(3 * 2**20 // 2)
    elif case == "too many pixels":
        image = _png(synthetic_photo(400, 400, noise=0))
    elif case == "too much work":  # 0.07 MP, all of it through the model at full resolution
        image = _png(synthetic_photo(240, 300, noise=0))
        mask = _png(np.tile(np.array([[255, 0, 0, 0]], np.uint8), (240, 75)))  # thin stripes: full resolution
    elif case == "decompression bomb":  # a tiny PNG header claiming 400 megapixels
        image = _png(np.zeros((1, 1), np.uint8))
        ihdr = b"IHDR" + (20000).to_bytes(4, "big") * 2 + image[24:29]
        image = image[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + image[33:]
    elif case.startswith("corrupt"):  # bytes 200-259 flipped: predict.py says "broken data stream"
        flip = lambda data: data[:200] + bytes(b ^ 0xFF for b in data[200:260]) + data[260:]  # noqa: E731
        if case == "corrupt image":
            image = flip(image)
        else:
            noise = np.random.default_rng(0).integers(0, 2, (48, 64), dtype=np.uint8) * 255
            mask = flip(_png(noise))
    r = _post(server, image, mask)
    assert r.status_code == status and message in r.json()["detail"]
    assert not re.search("0x[0-9a-f]{6}", r.json()["detail"])  # no memory address of the server's buffers


@pytest.mark.parametrize("channels", [1, 3])
def test_a_16_bit_upload_is_answered_like_predict_answers_it(server, channels):
    """Grey or RGB (which Pillow would open as 8-bit RGB, silently): a 400 with predict.py's reason."""
    import cv2

    ok, data = cv2.imencode(".png", np.full((48, 64, channels), 40000, np.uint16).squeeze())
    r = _post(server, data.tobytes(), _png(np.zeros((48, 64), np.uint8)))
    assert r.status_code == 400 and "more than 8 bits per pixel" in r.json()["detail"]


def test_api_documentation_loads_nothing_from_other_sites(server):
    assert httpx.get(f"{server}/api/docs").status_code == 404  # FastAPI's page pulls scripts from a CDN
    assert httpx.get(f"{server}/api/openapi.json").json()["paths"]["/api/inpaint"]
    page = httpx.get(server).text
    assert 'src="http' not in page and 'href="http' not in page


def _raw_request(url: str, head: bytes, chunks: Iterator[bytes] = iter(())) -> bytes:
    """Send ``head`` and then ``chunks`` (stopping when the server stops reading) and return the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        try:
            s.sendall(head)
            for chunk in chunks:
                s.sendall(chunk)
        except OSError:  # the server answered and closed while we were still sending
            pass
        answer = b""
        try:
            while data := s.recv(65536):
                answer += data
        except OSError:
            pass
        return answer


def test_a_chunked_upload_over_the_limit_is_cut_off_while_it_streams(server):
    """No Content-Length: the limit (1 MB) is enforced on the bytes as they arrive, so a 64 MB
    chunked upload is answered 413 after about the limit, never parsed or spooled to disk in full."""
    sent = [0]

    def chunks() -> Iterator[bytes]:
        part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="i.png"\r\n\r\n'
        yield b"%x\r\n" % len(part) + part + b"\r\n"
        block = b"x" * 65536
        for _ in range(1024):
            sent[0] += len(block)
            yield b"%x\r\n" % len(block) + block + b"\r\n"
        yield b"0\r\n\r\n"

    host = server.removeprefix("http://")
    head = (
        f"POST /api/inpaint HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    ).encode()
    answer = _raw_request(server, head, chunks())
    assert answer.startswith(b"HTTP/1.1 413") and b"over the limit of 1 MB" in answer
    assert sent[0] < 32 * 2**20  # cut off long before the end (socket buffers hold a few MB)


def test_the_guard_stops_reading_at_the_limit():
    """At the ASGI level: the app behind the guard never sees more than the limit."""
    import asyncio

    from pconv.webguard import RequestGuard as _Guard

    seen, pulled, sent = [0], [0], []

    async def receive():
        pulled[0] += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        while (message := await receive())["type"] == "http.request":
            seen[0] += len(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})

    guard = _Guard(app, limit=10_500, max_upload_mb=0.01, allow_origins=(), allowed_hosts=None)
    scope = {"type": "http", "method": "POST", "headers": [], "path": "/api/inpaint"}
    asyncio.run(guard(scope, receive, send))
    assert seen[0] <= 10_500 and pulled[0] == 11
    assert sent[0]["status"] == 413 and len([m for m in sent if m["type"] == "http.response.start"]) == 1


def test_requests_naming_another_host_are_refused_dns_rebinding():
    """A page on attacker.example that resolves to 127.0.0.1 sends its own Host and Origin."""
    app = create_app(PConvUNet(depth=3, base_width=4), allowed_hosts=allowed_hosts("127.0.0.1", []))
    with _running(app) as url:
        evil = {"Host": "attacker.example", "Origin": "http://attacker.example"}
        assert httpx.get(f"{url}/api/health", headers=evil).status_code == 400
        files = {
            "image": ("i.png", _png(synthetic_photo(16, 16))),
            "mask": ("m.png", _png(np.zeros((16, 16), np.uint8))),
        }
        r = httpx.post(f"{url}/api/inpaint", files=files, headers=evil)
        assert r.status_code == 400 and "--allow-host" in r.json()["detail"]
        port = url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
            assert httpx.get(f"{url}/api/health", headers={"Host": host}).status_code == 200, host
        # a Host that is not one name (and port) names no allowed host
        for host in ("localhost:evil.example", f"127.0.0.1:{port}, evil.example", "localhost:80:80", "[::1"):
            assert httpx.get(f"{url}/api/health", headers={"Host": host}).status_code == 400, host


def test_allowed_hosts_follow_the_bound_address():
    assert set(allowed_hosts("127.0.0.1", [])) == {"127.0.0.1", "localhost", "::1"}
    assert set(allowed_hosts("192.168.1.5", ["pc.lan"])) == {"192.168.1.5", "pc.lan"}
    assert allowed_hosts("0.0.0.0", []) is None and allowed_hosts("0.0.0.0", ["pc.lan"]) == ["pc.lan"]
    assert allowed_hosts("127.0.0.1", ["*"]) is None


def test_connections_that_never_finish_their_headers_are_closed():
    app = create_app(PConvUNet(depth=3, base_width=4))
    with _running(app, header_timeout=0.5) as url:
        host, port = url.removeprefix("http://").split(":")
        start = time.perf_counter()
        with (
            socket.create_connection((host, int(port)), timeout=10) as slow,
            socket.create_connection((host, int(port)), timeout=10) as silent,
        ):
            slow.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            assert slow.recv(100) == b"" and silent.recv(100) == b""  # closed by the server
        assert time.perf_counter() - start < 5
        assert httpx.get(f"{url}/api/health").status_code == 200  # a whole request still works


def test_empty_mask_returns_the_image_with_a_warning(server):
    image = synthetic_photo(20, 24, noise=0)
    r = _post(server, _png(image), _png(np.zeros((20, 24), np.uint8)))
    assert r.status_code == 200 and "no holes" in r.headers["x-pconv-warning"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), image)


def test_a_burst_of_concurrent_requests_is_all_answered(server):
    image = _png(synthetic_photo(64, 64, noise=0))
    holes = np.zeros((64, 64), np.uint8)
    holes[20:40, 8:50] = 255
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: _post(server, image, _png(holes)), range(12)))
    assert [r.status_code for r in responses] == [200] * 12
    assert len({r.content for r in responses}) == 1  # the same answer for every request


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Chromium and ChromeDriver (Debian: apt-get install chromium chromium-driver)",
)
@pytest.mark.parametrize("kind", ["png", "phone"])
def test_page_in_a_headless_browser(server, tmp_path: Path, kind: str):
    """Upload an image, paint a stroke, press Inpaint: the shown result differs from the input
    only under the stroke. A phone photo (stored landscape, EXIF orientation 6) is painted and
    returned as the browser shows it, portrait. The PNG is filled with push-pull, chosen from the
    page's method menu: the result is the library's push-pull fill of the painted holes."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = synthetic_photo(120, 160, noise=0)
    photo = tmp_path / ("photo.png" if kind == "png" else "photo.jpg")
    if kind == "png":
        Image.fromarray(image).save(photo)
    else:
        photo.write_bytes(_phone_jpeg(image, 6))
        with Image.open(photo) as img:
            image = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))  # as displayed: 120 wide, 160 high
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(server)
        driver.find_element(By.ID, "imageInput").send_keys(str(photo))
        canvas = driver.find_element(By.ID, "maskCanvas")
        WebDriverWait(driver, 10).until(lambda d: canvas.is_displayed() and canvas.size["width"] > 0)
        driver.execute_script(
            "const b = document.getElementById('brushSize'); b.value = 80;"
            "b.dispatchEvent(new Event('input', {bubbles: true}));"
        )
        pixels_per_css_px = driver.execute_script(
            "const c = document.getElementById('maskCanvas'); return c.width / c.getBoundingClientRect().width;"
        )
        w, h = canvas.size["width"], canvas.size["height"]
        (
            ActionChains(driver)
            .move_to_element_with_offset(canvas, int(-w * 0.25), int(-h * 0.1))
            .click_and_hold()
            .move_by_offset(int(w * 0.2), int(h * 0.05))
            .move_by_offset(int(w * 0.2), int(h * 0.05))
            .release()
            .perform()
        )
        if kind == "png":
            from selenium.webdriver.support.ui import Select

            menu = driver.find_element(By.ID, "method")
            WebDriverWait(driver, 10).until(lambda d: len(Select(menu).options) > 1)  # filled from /api/health
            Select(menu).select_by_value("pushpull")
        driver.find_element(By.ID, "inpaint").click()
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.result") == "ready")
        shown = driver.execute_script(
            "const i = document.getElementById('resultImg'), r = i.getBoundingClientRect();"
            "return [i.complete, i.naturalWidth, i.naturalHeight, r.width > 0 && r.height > 0];"
        )
        result_b64 = driver.execute_async_script(
            "const done = arguments[0];"
            "fetch(document.getElementById('resultImg').src).then(r => r.arrayBuffer()).then(b => {"
            "  let s = ''; new Uint8Array(b).forEach(c => s += String.fromCharCode(c)); done(btoa(s)); });"
        )
        mask_b64 = driver.execute_script(
            "const c = document.getElementById('maskCanvas'); return c.toDataURL('image/png').split(',')[1];"
        )
    finally:
        driver.quit()
    result = np.asarray(Image.open(io.BytesIO(base64.b64decode(result_b64))).convert("RGB"))
    painted = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask_b64))))[..., 3] > 127
    assert result.shape == image.shape and 0.01 < painted.mean() < 0.5
    changed = np.any(result != image, axis=-1)
    assert not changed[~painted].any()  # untouched outside the stroke
    assert changed[painted].mean() > 0.5  # filled under it
    if kind == "png":
        assert np.array_equal(result, inpaint("pushpull", image, ~painted).image)
    assert shown == [True, image.shape[1], image.shape[0], True]  # the result is on the page, at the image's size
    # the brush size chosen on the page is the painted stroke's thickness (in image pixels)
    columns = painted.sum(axis=0)
    thickness = np.median(columns[columns > 0])
    assert abs(thickness - 80 * pixels_per_css_px) <= max(3, 0.3 * 80 * pixels_per_css_px), thickness


class _Slow(PConvUNet):
    """A tiny model that takes ``delay`` seconds per forward pass (a batch of tiles) and counts its passes."""

    def __init__(self, delay: float) -> None:
        torch.manual_seed(0)
        super().__init__(depth=3, base_width=4)
        self.delay, self.calls = delay, 0

    def forward(self, image: torch.Tensor, mask: torch.Tensor, sample: bool = False) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.delay)
        return super().forward(image, mask, sample)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _stripes(height: int, width: int) -> bytes:
    """Thin vertical stripes of holes: every hole runs at full resolution."""
    return _png(np.tile(np.array([[255, 0, 0, 0]], np.uint8), (height, width // 4)))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads memory from /proc")
def test_under_load_the_queue_is_bounded_health_stays_fast_and_the_server_recovers():
    delay = 1.5  # per model pass: health answering in under half of it never waited on the model
    model = _Slow(delay)
    app = create_app(model, max_queue=2, max_work_mp=1.0)
    image, mask = _png(synthetic_photo(64, 64, noise=0)), _stripes(64, 64)
    with _running(app) as url:
        before = _rss_mb()
        with ThreadPoolExecutor(10) as pool:
            futures = [pool.submit(_post, url, image, mask) for _ in range(10)]
            time.sleep(0.3)
            health_times = []
            for _ in range(3):
                start = time.perf_counter()
                h = httpx.get(f"{url}/api/health", timeout=5)
                health_times.append(time.perf_counter() - start)
                assert h.status_code == 200
            busy = h.json()["queue"]
            responses = [f.result() for f in futures]
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 3 and codes.count(503) >= 5 and set(codes) == {200, 503}, codes
        assert all(r.headers["retry-after"] == "5" for r in responses if r.status_code == 503)
        assert max(health_times) < delay / 2 and busy["running"] == 1 and busy["waiting"] <= 2, health_times
        assert model.calls == codes.count(200)  # refused requests never reached the model
        assert _rss_mb() - before < 200
        assert _post(url, image, mask).status_code == 200  # recovered


def test_work_stops_when_the_client_disconnects():
    model = _Slow(0.1)
    app = create_app(model, options=InpaintOptions(tile=32, overlap=8, scale=1), max_work_mp=10)
    holes = np.zeros((512, 512), np.uint8)
    holes[::4] = 255  # every tile has holes: 441 tiles of 32 px, 56 passes of 8 tiles
    with _running(app) as url:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                f"{url}/api/inpaint",
                files={"image": ("i.png", _png(synthetic_photo(512, 512, noise=0))), "mask": ("m.png", _png(holes))},
                timeout=0.5,
            )
        time.sleep(1.0)
        calls = model.calls
        time.sleep(0.5)
        assert model.calls == calls and calls < 20  # stopped well before the 56 passes


def test_shutdown_cancels_running_work():
    model = _Slow(0.1)
    app = create_app(model, options=InpaintOptions(tile=32, overlap=8, scale=1), max_work_mp=10)
    holes = np.zeros((512, 512), np.uint8)
    holes[::4] = 255  # 56 passes of 0.1 s
    with _running(app) as url:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(_post, url, _png(synthetic_photo(512, 512, noise=0)), _png(holes))
            time.sleep(0.5)
            app.state.cancel_all.set()  # what SIGTERM does
            start = time.perf_counter()
            r = future.result()
        assert r.status_code == 503 and time.perf_counter() - start < 1.0
        assert _post(url, _png(synthetic_photo(32, 32, noise=0)), _png(np.zeros((32, 32), np.uint8))).status_code == 503


def test_requests_from_other_origins_are_refused_unless_allowed(server):
    image, mask = _png(synthetic_photo(16, 16, noise=0)), _png(np.zeros((16, 16), np.uint8))
    files = {"image": ("i.png", image), "mask": ("m.png", mask)}
    evil = httpx.post(f"{server}/api/inpaint", files=files, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and "--allow-origin" in evil.json()["detail"]
    own = httpx.post(f"{server}/api/inpaint", files=files, headers={"Origin": server})
    assert own.status_code == 200
    app = create_app(PConvUNet(depth=3, base_width=4), allow_origins=["https://ok.example"])
    with _running(app) as url:
        ok = httpx.post(f"{url}/api/inpaint", files=files, headers={"Origin": "https://ok.example"})
        assert ok.status_code == 200


@pytest.mark.slow
def test_sigterm_stops_the_server_within_seconds(tmp_path):
    from pconv import save_model

    torch.manual_seed(0)
    save_model(PConvUNet(depth=3, base_width=4), tmp_path / "tiny.safetensors")
    port = _free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "pconv.serve", "--weights", str(tmp_path / "tiny.safetensors"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                proc.kill()
                pytest.fail("the server did not start: " + proc.communicate()[1])
            start = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            assert time.perf_counter() - start < 5
        finally:
            proc.kill()


def _phone_jpeg(stored: np.ndarray, orientation: int) -> bytes:
    """A JPEG whose pixels are stored as ``stored`` with an EXIF orientation tag, as phones write them."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_a_phone_photo_is_inpainted_as_it_is_displayed(server):
    """Stored 64x48 landscape, orientation 6 (rotate 90 degrees clockwise): shown, masked and
    returned 48x64 portrait, its known pixels those of the displayed photo."""
    stored = synthetic_photo(48, 64, noise=0)
    data = _phone_jpeg(stored, 6)
    with Image.open(io.BytesIO(data)) as img:
        shown = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert shown.shape == (64, 48, 3)
    holes = np.zeros((64, 48), np.uint8)
    holes[40:52, 10:30] = 255
    r = _post(server, data, _png(holes))
    assert r.status_code == 200, r.text
    out = np.asarray(Image.open(io.BytesIO(r.content)))
    assert out.shape == (64, 48, 3) and np.array_equal(out[holes == 0], shown[holes == 0])
    stored_mask = _post(server, data, _png(np.zeros((48, 64), np.uint8)))  # drawn on the stored pixels
    assert stored_mask.status_code == 400
    assert "the mask is 64x48 but the image is 48x64 (as displayed)" in stored_mask.json()["detail"]


def _closed_by_server(s: socket.socket, timeout: float = 3.0) -> bool:
    """Whether the server closes ``s`` (after any answer) within ``timeout`` seconds."""
    s.settimeout(timeout)
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except OSError:
        return False


def _health_seconds(url: str) -> float:
    start = time.perf_counter()
    assert httpx.get(f"{url}/api/health", timeout=5).status_code == 200
    return time.perf_counter() - start


@pytest.mark.slow
def test_idle_sockets_cannot_starve_the_server():
    """200 sockets that never send a byte (reopened when closed), then 60 that send headers and a
    body at a trickle: health answers within a second throughout, and trickling bodies are cut."""
    app = create_app(PConvUNet(depth=3, base_width=4))
    with _running(app, body_grace=1.0) as url:
        host, port = url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(200)]
        try:
            time.sleep(0.3)
            assert max(_health_seconds(url) for _ in range(3)) < 1.0
            slow = []
            for _ in range(60):  # 5 are admitted (the queue) and read their body; the rest get 503
                s = socket.create_connection((host, int(port)), timeout=10)
                s.sendall(
                    b"POST /api/inpaint HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n--x"
                )
                slow.append(s)
            assert max(_health_seconds(url) for _ in range(3)) < 1.0
            time.sleep(2.5)  # past the grace period at far below the minimum rate
            for s in slow:
                with contextlib.suppress(OSError):
                    s.sendall(b"x")
            assert all(_closed_by_server(s) for s in slow)
            assert _health_seconds(url) < 1.0
        finally:
            for s in idle + locals().get("slow", []):
                s.close()


@pytest.mark.slow
def test_a_full_queue_answers_503_before_reading_the_upload():
    """One request on the model and none allowed to wait: the next upload is refused from its
    headers alone, while its 20 MB body has not been sent."""
    model = _Slow(2.0)
    app = create_app(model, max_queue=0, max_work_mp=1.0)
    image, mask = _png(synthetic_photo(64, 64, noise=0)), _stripes(64, 64)
    with _running(app) as url, ThreadPoolExecutor(1) as pool:
        busy = pool.submit(_post, url, image, mask)
        time.sleep(0.5)
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(
                b"POST /api/inpaint HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 20000000\r\n\r\n"
            )
            start = time.perf_counter()
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 5" in answer.lower()
        assert time.perf_counter() - start < 1.0
        assert busy.result().status_code == 200


@pytest.mark.slow
def test_shutdown_answers_a_request_in_the_middle_of_a_long_pass_with_503():
    """SIGTERM while one model pass takes longer than the graceful-shutdown timeout: the client
    gets 503 (not a 500 and a traceback in the log)."""
    app = create_app(_Slow(3.0), max_work_mp=1.0)
    image, mask = _png(synthetic_photo(64, 64, noise=0)), _stripes(64, 64)
    port = _free_port()
    srv = uvicorn.Server(
        server_config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=0.5)
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(_post, f"http://127.0.0.1:{port}", image, mask)
        time.sleep(0.5)
        app.state.cancel_all.set()  # what pconv-serve's SIGTERM handler does, then uvicorn shuts down
        srv.should_exit = True
        r = future.result()
    thread.join(timeout=10)
    assert r.status_code == 503 and "shutting down" in r.json()["detail"]


def test_an_address_keeps_only_its_newest_idle_connections():
    app = create_app(PConvUNet(depth=3, base_width=4))
    with _running(app, idle_per_client=4) as url:
        host, port = url.removeprefix("http://").split(":")
        idle = []
        for _ in range(10):
            idle.append(socket.create_connection((host, int(port)), timeout=10))
            time.sleep(0.02)  # opened in order
        try:
            closed = [_closed_by_server(s, timeout=0.5) for s in idle]
            assert closed == [True] * 6 + [False] * 4  # the oldest went first
            assert _health_seconds(url) < 1.0
        finally:
            for s in idle:
                s.close()
