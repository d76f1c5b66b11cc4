"""`hwprofiler` command line: serve a device, list devices, fingerprint, measure a model.

argparse only, so a target device needs nothing beyond the `device` extra.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import sys
from pathlib import Path

from hwprofiler.errors import DeviceError

DEFAULT_PORT = 8765


def _read_token(path: str | None) -> tuple[str, bool]:
    """The token from --token-file, else $HWPROFILER_TOKEN, else a new one (second item: generated)."""
    if path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise DeviceError(f"cannot read token file {path}: {e.strerror}") from None
        if not token:
            raise DeviceError(f"token file {path} is empty")
        return token, False
    if os.environ.get("HWPROFILER_TOKEN"):
        return os.environ["HWPROFILER_TOKEN"], False
    return secrets.token_urlsafe(32), True


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (binding elsewhere exposes the server)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hwprofiler.devices import load_device
    from hwprofiler.server import create_app

    device = load_device(args.device)
    if device.is_remote:
        raise DeviceError("`hwprofiler serve` measures on this host: pick a local device, not remote:")
    token, generated = _read_token(args.token_file)
    app = create_app(
        device, token, max_upload_bytes=int(args.max_upload_mb * 2**20), queue_size=args.queue, timeout_s=args.timeout
    )
    err = sys.stderr
    if generated:
        print(f"hwprofiler: token (shown once; clients set HWPROFILER_TOKEN to it): {token}", file=err)
    if not is_loopback(args.host):
        print(f"hwprofiler: warning: listening on {args.host}: anyone who can reach it with the token runs models here", file=err)
    print(f"hwprofiler: serving device {device.name} on http://{args.host}:{args.port}", file=err, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from hwprofiler.devices import list_devices, load_device
    from hwprofiler.runtimes import get_runtime

    for name in list_devices():
        spec = load_device(name)
        usable, status = get_runtime(spec.runtime).status(spec)
        print(f"{name}\t{spec.runtime}\t{'ok' if usable else 'unusable'}: {status}\t{spec.description}")
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from hwprofiler.devices import load_device
    from hwprofiler.fingerprint import fingerprint, fingerprint_id

    fp = fingerprint(load_device(args.device))
    print(json.dumps({**fp, "fingerprint_id": fingerprint_id(fp)}, indent=1))
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from hwprofiler.measure import measure_onnx

    m = measure_onnx(args.model, args.device, cache=not args.no_cache)
    print(json.dumps({**m.to_dict(samples=False), "cached": m.cached}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwprofiler", description="Measure ONNX model latency on a target device.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve this host's device over HTTP (bearer token required)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--token-file", help="file holding the bearer token (else $HWPROFILER_TOKEN, else generated)")
    serve.add_argument("--device", default="ort-cpu-1t", help="built-in device name or TOML file")
    serve.add_argument("--max-upload-mb", type=float, default=64.0, help="largest request body accepted")
    serve.add_argument("--queue", type=int, default=8, help="measurements allowed to wait; more get 503")
    serve.add_argument("--timeout", type=float, default=120.0, help="seconds a request waits for its measurement")
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(func=cmd_serve)

    devices = sub.add_parser("devices", help="list built-in device specs, their runtimes and whether each is usable here")
    devices.set_defaults(func=cmd_devices)

    fp = sub.add_parser("fingerprint", help="print a device's fingerprint")
    fp.add_argument("--device", default="ort-cpu-1t")
    fp.set_defaults(func=cmd_fingerprint)

    meas = sub.add_parser("measure", help="measure one ONNX model")
    meas.add_argument("model", help="path to an .onnx file")
    meas.add_argument("--device", default="ort-cpu-1t", help="built-in name, TOML file or remote:http://HOST:PORT")
    meas.add_argument("--no-cache", action="store_true", help="measure even if a cached result exists")
    meas.set_defaults(func=cmd_measure)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DeviceError, ValueError, OSError) as e:
        print(f"hwprofiler: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
