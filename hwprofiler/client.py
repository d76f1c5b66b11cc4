"""Client for a `hwprofiler serve` process, on the standard library only.

Transient failures (connection refused or reset while the server starts, 503 while its queue
is full) are retried with exponential backoff; anything else becomes one `DeviceError` whose
message says what to fix.  Proxies are bypassed: the profiler is on the LAN or loopback.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from hwprofiler.devices import DeviceSpec
from hwprofiler.errors import DeviceError
from hwprofiler.kernels import KernelSpec
from hwprofiler.measurement import Measurement, PairedMeasurement

_TRANSIENT = (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


class ProfilerClient:
    """Talks to one profiler server."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 300.0,
        retries: int = 5,
        backoff_s: float = 0.25,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        last = ""
        for attempt in range(self.retries + 1):
            delay = self.backoff_s * 2**attempt
            req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
            try:
                with self._opener.open(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as e:
                detail = _error_text(e)
                if e.code == 401:
                    raise DeviceError(
                        f"profiler at {self.url} rejected the token (401): set HWPROFILER_TOKEN or "
                        "HWPROFILER_TOKEN_FILE to the token `hwprofiler serve` printed"
                    ) from None
                if e.code == 503:
                    last = f"busy (503): {detail}"
                    retry_after = e.headers.get("Retry-After", "")
                    if retry_after.isdigit():
                        delay = max(delay, min(float(retry_after), 30.0))
                else:
                    raise DeviceError(f"profiler at {self.url} answered {e.code} to {method} {path}: {detail}") from None
            except urllib.error.URLError as e:
                if not isinstance(e.reason, _TRANSIENT):
                    raise DeviceError(f"profiler at {self.url} is unreachable: {e.reason}") from None
                last = f"{type(e.reason).__name__}"
            except _TRANSIENT + (http.client.RemoteDisconnected,) as e:
                last = type(e).__name__
            except TimeoutError:
                raise DeviceError(
                    f"profiler at {self.url} did not answer {method} {path} within {self.timeout_s:.0f} s"
                ) from None
            if attempt < self.retries:
                time.sleep(delay)
        raise DeviceError(f"profiler at {self.url} is unreachable after {self.retries + 1} tries: {last}")

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def device(self) -> dict[str, Any]:
        """The server's device: name, spec, fingerprint and fingerprint_id."""
        return self._request("GET", "/device")

    def measure(self, model: bytes, samples: bool = False) -> Measurement:
        """Live measurement of a serialized ONNX model on the server's device."""
        data = self._request("POST", "/measure" + ("?samples=1" if samples else ""), model, "application/octet-stream")
        return Measurement.from_dict(data["measurement"], cached=bool(data.get("cached")))

    def measure_pair(self, model: bytes, reference: bytes) -> PairedMeasurement:
        """`model` timed interleaved with `reference` on the server's device (its policy)."""
        body = json.dumps({"model": base64.b64encode(model).decode(), "reference": base64.b64encode(reference).decode()})
        data = self._request("POST", "/measure_pair", body.encode(), "application/json")
        return PairedMeasurement.from_dict(data["measurement"], cached=bool(data.get("cached")))

    def kernels(self, specs: Sequence[KernelSpec]) -> list[tuple[Measurement, str | None]]:
        """Measure single-kernel models on the server's device (its kernel policy), each with the
        layout its runtime chose."""
        body = json.dumps([s.to_dict() for s in specs]).encode()
        data = self._request("POST", "/kernels", body, "application/json")
        return [(Measurement.from_dict(r), r.get("layout")) for r in data["results"]]

    def device_kernels(self, model: bytes, batch: int | None = None) -> list[KernelSpec]:
        """The kernels the server's runtime runs a serialized ONNX model as (its own fusions)."""
        query = f"?batch={int(batch)}" if batch else ""
        data = self._request("POST", "/device_kernels" + query, model, "application/octet-stream")
        return [KernelSpec.from_dict(k) for k in data["kernels"]]


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(e.read() or b"{}")
        return str(payload.get("error", payload))
    except (ValueError, OSError):
        return e.reason if isinstance(e.reason, str) else str(e)


def client_for(spec: DeviceSpec) -> ProfilerClient:
    """The client for a remote device spec; `$HWPROFILER_CLIENT_RETRIES` sets how often a refused
    connection is retried (default 5, with exponential backoff)."""
    if spec.remote is None:
        raise DeviceError(f"device {spec.name} is not remote")
    retries = os.environ.get("HWPROFILER_CLIENT_RETRIES", "5")
    if not retries.isdigit():
        raise DeviceError(f"$HWPROFILER_CLIENT_RETRIES must be a whole number, got {retries!r}")
    return ProfilerClient(spec.remote, spec.token, retries=int(retries))
