"""One measurement at a time: a single worker thread fed by a bounded queue.

Two models timed at once would slow each other down, so the server serialises them; the bound
turns overload into an immediate "busy" answer instead of an ever-growing backlog.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class QueueFull(Exception):
    """The worker already has as many jobs waiting as it accepts."""


class MeasureWorker:
    def __init__(self, max_waiting: int) -> None:
        self._queue: queue.Queue[tuple[Future[Any], Callable[[], Any]] | None] = queue.Queue(maxsize=max(1, max_waiting))
        self._thread = threading.Thread(target=self._loop, name="hwprofiler-worker", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Queue `fn`; raise `QueueFull` rather than wait."""
        fut: Future[Any] = Future()
        try:
            self._queue.put_nowait((fut, fn))
        except queue.Full:
            raise QueueFull from None
        return fut

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn = item
            if not fut.set_running_or_notify_cancel():
                continue  # the request timed out before its turn came
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the waiting request
                fut.set_exception(e)

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)
