"""A local web page and HTTP API to try a model (``pconv-serve``).

Open the page, drop a photo, paint the holes, press Inpaint. Programs use the API:

    curl -F image=@photo.jpg -F mask=@holes.png http://127.0.0.1:8000/api/inpaint -o filled.png
    curl http://127.0.0.1:8000/api/health

Under load it stays responsive (a bounded queue, a work budget known before decoding, work that
stops when its client leaves: see :mod:`pconv.webapp`, whose limits ``--max-queue``,
``--max-work-mp``, ``--max-upload-mb``, ``--max-megapixels`` and ``--allow-origin`` set); SIGTERM
or Ctrl-C stops running work at its next tile and the server within seconds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pconv.cli import WEIGHTS_HELP, UsageError, add_inpaint_options, inpaint_options, resolve_device, run_main
from pconv.errors import require
from pconv.lazy import lazy_exports
from pconv.methods import METHODS, parse_methods

__all__ = ["create_app", "main"]

# The web application (FastAPI) and PyTorch load once the command line is parsed, so --help and
# usage errors come at once; ``from pconv.serve import create_app`` still works.
__getattr__, __dir__ = lazy_exports(__name__, {"create_app": "pconv.webapp"})

if TYPE_CHECKING:
    from pconv.webapp import create_app


def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog="pconv-serve", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--weights",
        type=Path,
        help=WEIGHTS_HELP,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest request in MB (default 25)")
    p.add_argument("--max-megapixels", type=float, default=50.0, help="largest image in megapixels (default 50)")
    p.add_argument("--max-queue", type=int, default=4, help="requests that may wait while one runs (default 4)")
    p.add_argument(
        "--max-work-mp",
        type=float,
        default=16.0,
        help="megapixels through the model per request, known before decoding (default 16)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="also accept requests from web pages at this origin (repeatable; * for any)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also accept requests that reach the server by this host name (repeatable; * for any). "
        "By default only the --host address, and localhost names when it is a loopback address, "
        "which keeps pages on other sites out (DNS rebinding)",
    )
    add_inpaint_options(p, ("scale", "precision"))
    p.add_argument(
        "--methods",
        default="all",
        metavar="NAME[,NAME...]|all",
        help=f"the methods a request may choose ({', '.join(METHODS)}; default all that are installed); "
        "model is always offered",
    )
    args = p.parse_args(argv)
    methods = parse_methods(args.methods)
    require("serve", "pconv-serve", "fastapi", "uvicorn", "multipart")
    if args.max_queue < 0 or args.max_work_mp <= 0:
        raise UsageError("--max-queue must be at least 0 and --max-work-mp positive")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    hosts = allowed_hosts(args.host, args.allow_host)
    from pconv.io import DEFAULT_WEIGHTS, load_model

    device = resolve_device(args.device)
    model = load_model(args.weights, device=device)
    weights = args.weights or DEFAULT_WEIGHTS
    import uvicorn

    from pconv.webapp import create_app
    from pconv.webguard import server_config

    app = create_app(
        model,
        device=device,
        weights_name=weights.name,
        max_upload_mb=args.max_upload_mb,
        max_megapixels=args.max_megapixels,
        options=inpaint_options(args, ("scale", "precision")),
        max_queue=args.max_queue,
        max_work_mp=args.max_work_mp,
        allow_origins=args.allow_origin,
        allowed_hosts=hosts,
        methods=methods,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            app.state.cancel_all.set()  # running work stops at its next tile
            super().handle_exit(sig, frame)

    offered = ", ".join(app.state.methods)
    print(f"serving {weights.name} ({offered}) on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    if hosts is None:
        print(
            "note: any Host name is accepted (--host binds every interface and no --allow-host names the server); "
            "a page on another site whose name resolves to this machine can use it",
            file=sys.stderr,
        )
    Server(server_config(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=3)).run()
    return 0


def allowed_hosts(bind: str, extra: Sequence[str]) -> list[str] | None:
    """The Host names a server bound to ``bind`` accepts: that address, this machine's loopback
    names when it is a loopback address, and ``extra``; ``None`` (any) for ``*`` or for a
    wildcard bind with no ``extra`` (its names cannot be known)."""
    import ipaddress

    if "*" in extra:
        return None
    try:
        address = ipaddress.ip_address(bind.strip("[]"))
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        return list(extra) or None
    hosts = [bind, *extra]
    if bind == "localhost" or (address is not None and address.is_loopback):
        hosts += ["127.0.0.1", "localhost", "::1"]
    return hosts


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``pconv-serve``)."""
    return run_main(_main, argv, "pconv-serve")


if __name__ == "__main__":
    sys.exit(main())
