"""HTTP profiler server: measure models on the device it runs on.

Endpoints: GET /health (no auth), GET /device, POST /measure (ONNX bytes), POST /measure_pair
(JSON: a model and a reference, base64, timed interleaved), POST /kernels (JSON list of kernel
specs), POST /device_kernels (ONNX bytes: the fused kernels this device's runtime runs it as).
Everything but /health needs `Authorization: Bearer <token>`.
The server runs untrusted models, so it caps body size (Content-Length and the streamed count),
checks models with onnx.checker, never loads custom-op libraries, refuses external weights,
measures one model at a time behind a bounded queue (503 + Retry-After when full) and gives up
waiting after a per-request timeout (504).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hwprofiler.cache import MeasurementCache
from hwprofiler.devices import DeviceSpec
from hwprofiler.errors import InvalidModelError, KernelError
from hwprofiler.fingerprint import fingerprint_id, local_fingerprint
from hwprofiler.fusion import device_kernels
from hwprofiler.kernels import KernelSpec
from hwprofiler.lut import measure_kernels
from hwprofiler.measure import measure_onnx, measure_paired, sha256
from hwprofiler.validate import parse_model
from hwprofiler.worker import MeasureWorker, QueueFull

MAX_KERNELS_PER_REQUEST = 256


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _HTTPError(400, "bad Content-Length header")
        if int(declared) > limit:
            raise _HTTPError(413, f"body of {int(declared)} bytes is over the {limit}-byte limit")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise _HTTPError(413, f"body is over the {limit}-byte limit")
    return bytes(buf)


async def _drain(request: Request, limit: int) -> None:
    """Read and drop a refused request's body (up to `limit` bytes): answered before its body is
    read, a client still writing it meets a closed connection (BrokenPipeError) instead of the
    answer. A body over the limit is left unread, as `_read_body` leaves it."""
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > limit:
        return
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                return
    except Exception:  # noqa: BLE001 - a client gone mid-body: nothing to answer
        return


def create_app(
    device: DeviceSpec,
    token: str,
    *,
    max_upload_bytes: int = 64 * 2**20,
    queue_size: int = 8,
    timeout_s: float = 120.0,
    cache: MeasurementCache | bool | None = True,
) -> Starlette:
    """The server for a local device spec; `token` is the bearer token every request but /health needs."""
    if device.is_remote:
        raise ValueError("a profiler server measures on its own host: give it a local device spec")
    if not token:
        raise ValueError("the server needs a non-empty token")
    fp = local_fingerprint(device)
    fid = fingerprint_id(fp)
    expected = f"Bearer {token}".encode()
    store = MeasurementCache() if cache is True else (cache or None)
    state: dict[str, MeasureWorker] = {}
    retry_after = str(max(1, math.ceil(2 * device.policy.rounds * device.policy.round_s)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["worker"] = MeasureWorker(queue_size)
        try:
            yield
        finally:
            state.pop("worker").close()

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, expected)

    async def run_job(fn: Callable[[], Any]) -> Any:
        try:
            fut = state["worker"].submit(fn)
        except QueueFull:
            raise _HTTPError(503, "profiler is busy; retry later", {"Retry-After": retry_after}) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout_s)
        except asyncio.TimeoutError:
            fut.cancel()
            raise _HTTPError(504, f"measurement did not finish within {timeout_s:.0f} s") from None
        except (InvalidModelError, KernelError) as e:
            raise _HTTPError(400, str(e)) from None

    def endpoint(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            if not authorized(request):
                await _drain(request, max_upload_bytes)  # so a client still sending its body reads the 401
                return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
            try:
                return await handler(request)
            except _HTTPError as e:
                return _error(e.status, e.message, e.headers)
            except Exception as e:  # noqa: BLE001 - one clear line to the client, not a stack dump
                return _error(500, f"{type(e).__name__}: {e}")

        return wrapped

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def device_info(request: Request) -> Response:
        return JSONResponse({"name": device.name, "spec": device.to_dict(), "fingerprint": fp, "fingerprint_id": fid})

    async def measure(request: Request) -> Response:
        data = await _read_body(request, max_upload_bytes)
        try:
            await asyncio.to_thread(parse_model, data)
        except InvalidModelError as e:
            raise _HTTPError(400, str(e)) from None
        keep = request.query_params.get("samples") in ("1", "true")
        m = await run_job(lambda: measure_onnx(data, device, cache=store, keep_samples=keep))
        return JSONResponse(
            {
                "device": device.name,
                "fingerprint_id": fid,
                "sha256": sha256(data),
                "cached": m.cached,
                "measurement": m.to_dict(samples=keep),
            }
        )

    async def measure_pair(request: Request) -> Response:
        body = await _read_body(request, 2 * max_upload_bytes)
        try:
            payload = json.loads(body)
            data, ref = (base64.b64decode(payload[k], validate=True) for k in ("model", "reference"))
        except (ValueError, KeyError, TypeError, binascii.Error) as e:
            raise _HTTPError(400, f"body must be JSON {{'model': base64, 'reference': base64}}: {e}") from None
        for blob in (data, ref):
            if len(blob) > max_upload_bytes:
                raise _HTTPError(413, f"a model of {len(blob)} bytes is over the {max_upload_bytes}-byte limit")
            try:
                await asyncio.to_thread(parse_model, blob)
            except InvalidModelError as e:
                raise _HTTPError(400, str(e)) from None
        m = await run_job(lambda: measure_paired(data, ref, device, cache=store))
        return JSONResponse({"device": device.name, "fingerprint_id": fid, "cached": m.cached, "measurement": m.to_dict()})

    async def kernels(request: Request) -> Response:
        body = await _read_body(request, max_upload_bytes)
        try:
            items = json.loads(body)
        except ValueError as e:
            raise _HTTPError(400, f"body is not JSON: {e}") from None
        if not isinstance(items, list) or not items or len(items) > MAX_KERNELS_PER_REQUEST:
            raise _HTTPError(400, f"body must be a JSON list of 1 to {MAX_KERNELS_PER_REQUEST} kernel specs")
        try:
            specs = [KernelSpec.from_dict(d) for d in items]
        except KernelError as e:
            raise _HTTPError(400, str(e)) from None
        results = await run_job(lambda: measure_kernels(specs, device))
        return JSONResponse(
            {
                "device": device.name,
                "fingerprint_id": fid,
                "results": [
                    {"spec": s.to_dict(), **m.to_dict(samples=False), "layout": layout} for s, (m, layout) in zip(specs, results)
                ],
            }
        )

    async def fused_kernels(request: Request) -> Response:
        data = await _read_body(request, max_upload_bytes)
        try:
            await asyncio.to_thread(parse_model, data)
        except InvalidModelError as e:
            raise _HTTPError(400, str(e)) from None
        batch_text = request.query_params.get("batch", "")
        if batch_text and not (batch_text.isdigit() and int(batch_text) >= 1):
            raise _HTTPError(400, f"batch must be a positive integer, got {batch_text!r}")
        batch = int(batch_text) if batch_text else None
        # In the measuring queue: compiling a model (OpenVINO) must not overlap a measurement.
        kernels = await run_job(lambda: device_kernels(data, device, batch=batch))
        return JSONResponse({"device": device.name, "fingerprint_id": fid, "kernels": [k.to_dict() for k in kernels]})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/device", endpoint(device_info), methods=["GET"]),
        Route("/measure", endpoint(measure), methods=["POST"]),
        Route("/measure_pair", endpoint(measure_pair), methods=["POST"]),
        Route("/kernels", endpoint(kernels), methods=["POST"]),
        Route("/device_kernels", endpoint(fused_kernels), methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
