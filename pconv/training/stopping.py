"""Stopping a run cleanly: Ctrl-C or SIGTERM asks, the loop saves after the step under way."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from tqdm import tqdm

__all__ = ["StopRequest", "Stopped"]


class StopRequest:
    """Ctrl-C / SIGTERM set a flag that the loop reads between steps; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals only reach the main thread; a plain KeyboardInterrupt still works
            return

        def handler(signum: int, frame: object) -> None:
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = True
            tqdm.write("stopping after this step (Ctrl-C again to stop at once, without saving)", file=sys.stderr)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class Stopped(KeyboardInterrupt):
    """Raised after a requested stop has been saved."""
