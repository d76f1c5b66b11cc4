"""`hilprune devices`, `hilprune profile`, `hilprune lut build|check`: the target device from the CLI."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import HilpruneError
from .options import CheckpointOpt, DatasetOpt, DeviceOpt, InputShapeOpt, JsonOpt, ModelOpt, NumClassesOpt
from .output import console, out, print_json, print_table


def _device(name: str, check: bool = True):  # -> hwprofiler.DeviceSpec
    """The device, its runtime checked usable here unless `check` is false (a missing OpenVINO, or
    a precision this CPU lacks, is one line, not a traceback)."""
    import hwprofiler

    try:
        return hwprofiler.usable_device(name) if check else hwprofiler.load_device(name)
    except hwprofiler.DeviceError as exc:
        raise HilpruneError(str(exc)) from None


def _settings(spec) -> dict:  # spec: hwprofiler.DeviceSpec
    """What the runtime is told: onnxruntime's session fields, or the runtime's own table."""
    if spec.runtime == "onnxruntime":
        return {"providers": list(spec.providers), "threads": spec.intra_op_threads, "level": spec.graph_optimization_level}
    return dict(spec.runtime_options)


def _precision_table(spec: Any, quiet: bool, refresh: bool = False) -> dict[str, Any]:
    """hwprofiler's precision table of a device (cached per fingerprint); an error becomes a note."""
    import hwprofiler
    from hwprofiler.precision import REFERENCE, precision_table

    try:
        if quiet:
            return precision_table(spec, refresh=refresh)
        with console.status(f"timing fp32 and INT8 schemes on {spec.name} ({REFERENCE})"):
            return precision_table(spec, refresh=refresh)
    except (hwprofiler.DeviceError, hwprofiler.InvalidModelError) as exc:
        return {"error": str(exc)}


def _best(table: dict[str, Any] | None) -> str:
    if table is None:
        return "-"
    if "error" in table:
        return "unknown"
    if table["keeps_fp32"]:
        return "fp32 (INT8 is slower)"
    best = next(r for r in table["schemes"] if r["name"] == table["best"])
    unsettled = " unsettled" if table.get("settled") is False else ""
    return f"int8 {best['name']} ({1 / best['ratio']:.2f}x{unsettled})"


def _print_precisions(rows: list[dict[str, Any]]) -> None:
    from hwprofiler.precision import REFERENCE

    lines = []
    for r in rows:
        table = r.get("precision") or {}
        if "error" in table:
            lines.append([r["name"], "-", "-", "-", f"not measured: {table['error']}"])
            continue
        for s in sorted(table.get("schemes", []), key=lambda x: x.get("ratio", math.inf)):
            if "error" in s:  # the runtime cannot run this format
                lines.append([r["name"], s["name"], "-", "-", f"cannot run: {s['error'][:60]}"])
                continue
            verdict = "faster than fp32" if s["faster"] else "not faster: fp32 kept" if table["keeps_fp32"] else "not faster"
            fp32_ms = s["int8_ms"] / s["ratio"]  # the fp32 graph's fastest time in the table (hwprofiler.precision)
            lines.append([r["name"], s["name"], f"{s['int8_ms']:.4g} / {fp32_ms:.4g}", f"{1 / s['ratio']:.2f}x", verdict])
        if table.get("settled") is False:
            why = f"unsettled: fp32 timings {table['fp32_spread']:.2f}x apart; --remeasure when the machine is idle"
            lines.append([r["name"], "-", "-", "-", why])
    title = f"precisions ({REFERENCE}; INT8 paired with fp32, against fp32's fastest time in the table)"
    print_table(title, ["device", "scheme", "INT8 / fp32 ms", "speedup", ""], lines)


def register(app: typer.Typer) -> None:
    lut_app = typer.Typer(help="Per-kernel latency lookup tables of a device.", no_args_is_help=True)
    app.add_typer(lut_app, name="lut")

    @app.command("devices")
    def devices_cmd(
        precisions: Annotated[
            bool,
            typer.Option(
                "--precisions/--no-precisions",
                help="Time fp32 and each INT8 scheme on a reference conv stack (once per device fingerprint, then cached).",
            ),
        ] = True,
        remeasure: Annotated[
            bool,
            typer.Option("--remeasure", help="Time the precisions again (a first timing taken on a busy machine stays cached)."),
        ] = False,
        extra: Annotated[
            list[str] | None, typer.Option("--device", help="Also show this device (a TOML file or remote:http://HOST:PORT).")
        ] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """List target devices (built-ins: this machine's CPU through onnxruntime or OpenVINO, and a
        simulated CPU) with each one's runtime, whether that runtime is usable here, where its LUT and
        cache live, and the precisions it runs fast (INT8 schemes timed against fp32 on a reference conv stack)."""
        import hwprofiler
        from hwprofiler.cache import MeasurementCache
        from hwprofiler.runtimes import get_runtime

        rows = []
        for name in [*hwprofiler.list_devices(), *(extra or [])]:
            spec = _device(name, check=False)  # an unusable device is listed with the reason
            usable, status = (
                get_runtime(spec.runtime).status(spec) if not spec.is_remote else (True, f"profiler at {spec.remote}")
            )
            fp = hwprofiler.fingerprint(spec) if usable else {}
            fid = hwprofiler.fingerprint_id(fp) if usable else None
            row = {
                "name": name,
                "description": spec.description,
                "runtime": spec.runtime,
                "usable": usable,
                "status": status,
                "settings": _settings(spec),
                "fingerprint_id": fid,
                "fingerprint": fp,
                # where this machine keeps the device's kernel table and measurement cache
                "lut": str(hwprofiler.LUT.default_path(fid)) if fid else None,
                "cache": str(MeasurementCache().root / fid) if fid else None,
            }
            if precisions and usable and not spec.is_remote:  # onnxruntime's INT8 schemes, timed on this runtime
                row["precision"] = _precision_table(spec, quiet=json_out, refresh=remeasure)
            rows.append(row)
        if json_out:
            print_json({"devices": rows})
            return
        print_table(
            "target devices",
            ["name", "runtime", "status", "fingerprint", "precision", "description"],
            [
                [
                    r["name"],
                    r["runtime"],
                    r["status"] if r["usable"] else f"[red]{r['status']}[/red]",
                    r["fingerprint_id"] or "-",
                    _best(r.get("precision")),
                    r["description"],
                ]
                for r in rows
            ],
        )
        if precisions:
            _print_precisions(rows)
        console.print("Also: a path to a device TOML file, or remote:http://HOST:PORT for a 'hwprofiler serve' on the device.")

    @app.command("profile")
    def profile_cmd(
        model: ModelOpt,
        device: DeviceOpt = "ort-cpu-1t",
        dataset: DatasetOpt = None,
        input_shape: InputShapeOpt = None,
        num_classes: NumClassesOpt = None,
        checkpoint: CheckpointOpt = None,
        policy: Annotated[Path | None, typer.Option("--policy", "-p", help="Measure the model pruned by this policy.")] = None,
        no_cache: Annotated[
            bool, typer.Option("--no-cache", help="Measure again even if this graph was measured on this device.")
        ] = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Measure a model's live latency on a device (median, p10/p90, samples, CI of the median)."""
        import hwprofiler

        from ..export import to_onnx_bytes
        from ..models import resolve_model
        from ..policy import Policy
        from ..surgery import Surgeon

        spec = resolve_model(model, dataset, input_shape, num_classes, checkpoint)
        dev = _device(device)
        net = spec.build(with_weights=False)
        if policy is not None:
            pol = Policy.load(policy)
            surgeon = Surgeon(net, spec.input_shape, spec.identity(), pol.importance, removed_blocks=pol.removed_blocks)
            net = surgeon.apply(pol, count=False).model
        with console.status(f"measuring on {dev.name}"):
            m = hwprofiler.measure_onnx(to_onnx_bytes(net, spec.input_shape, dev.batch), dev, cache=not no_cache)
        result = m.to_dict(samples=False) | {"cached": m.cached, "device": dev.name}
        if json_out:
            print_json(result)
        else:
            out.print(
                f"{spec.name}{' (pruned)' if policy else ''} on {dev.name}: {m.latency_ms:.4g} ms "
                f"({m.estimator} of {m.n} runs in {m.rounds} rounds; median {m.median_ms:.4g}, p90 {m.p90_ms:.4g}, "
                f"rounds spread {100 * m.round_spread:.1f}%){' [cached]' if m.cached else ''}"
            )

    @lut_app.command("build")
    def lut_build_cmd(
        model: ModelOpt,
        device: DeviceOpt = "ort-cpu-1t",
        dataset: DatasetOpt = None,
        input_shape: InputShapeOpt = None,
        num_classes: NumClassesOpt = None,
        grid_step: Annotated[float, typer.Option(help="Ratio grid step: every policy on this grid is covered.")] = 0.1,
        max_ratio: Annotated[float, typer.Option(help="Largest prune ratio of the grid.")] = 0.9,
        round_to: Annotated[int, typer.Option(help="Channel rounding used by the policies.")] = 1,
        calibration_runs: Annotated[
            int, typer.Option(help="Live runs that calibrate the predictor for this model (0: kernels only).")
        ] = 30,
        json_out: JsonOpt = False,
    ) -> None:
        """Measure ahead of time every kernel that the model's policies on a ratio grid can produce,
        and calibrate the device's predictor for the model (what a search otherwise does on first use)."""
        import hwprofiler

        from ..calibrate import calibrate, model_scope
        from ..kernel_map import KernelMap, ratio_grid
        from ..models import resolve_model
        from ..policy import groups_signature
        from ..surgery import Surgeon

        if not 0 < grid_step <= max_ratio <= 1:
            raise HilpruneError("need 0 < --grid-step <= --max-ratio <= 1")
        spec = resolve_model(model, dataset, input_shape, num_classes, use_shipped=False)
        dev = _device(device)
        if calibration_runs < 0:
            raise HilpruneError("--calibration-runs must be >= 0")
        with console.status("mapping kernels to groups"):
            surgeon = Surgeon(spec.build(with_weights=False), spec.input_shape, spec.identity())
            kmap = KernelMap(surgeon, batch=dev.batch, device=dev)
        kernels = kmap.reachable(ratio_grid(max_ratio, grid_step), round_to)
        lut = hwprofiler.open_lut(dev)
        before = len(lut)
        measured = lut.fill(kernels, progress=not json_out)
        predictor = hwprofiler.Predictor(lut, scope=model_scope(spec.name, spec.input_shape, groups_signature(surgeon.groups)))
        runs = calibrate(
            surgeon, dev, predictor, kmap=kmap, runs=calibration_runs, max_ratio=max_ratio, round_to=round_to,
            progress=not json_out,
        )  # fmt: skip
        result = {
            "lut": str(lut.path),
            "kernels_reachable": len(kernels),
            "measured": measured,
            "entries_before": before,
            "entries": len(lut),
            "calibration_runs": runs,
            "device": dev.name,
        }
        if json_out:
            print_json(result)
        else:
            out.print(
                f"LUT {lut.path}: {len(kernels)} reachable kernels, {measured} measured now, {len(lut)} entries; "
                f"{runs} calibration run(s) now"
            )

    @lut_app.command("check")
    def lut_check_cmd(
        model: ModelOpt,
        device: DeviceOpt = "ort-cpu-1t",
        dataset: DatasetOpt = None,
        input_shape: InputShapeOpt = None,
        num_classes: NumClassesOpt = None,
        samples: Annotated[int, typer.Option(help="Random policies measured live.")] = 50,
        seed: Annotated[int, typer.Option(help="Seed of the random policies.")] = 0,
        max_ratio: Annotated[float, typer.Option(help="Largest prune ratio drawn.")] = 0.9,
        round_to: Annotated[int, typer.Option(help="Channel rounding of the policies.")] = 1,
        json_out: JsonOpt = False,
    ) -> None:
        """Predicted vs live latency on random policies: share within ±10%, MAPE, Kendall tau; same for FLOPs."""
        from ..latency_check import check_fidelity
        from ..models import resolve_model

        if samples < 2:
            raise HilpruneError("--samples must be at least 2")
        spec = resolve_model(model, dataset, input_shape, num_classes, use_shipped=False)
        _device(device)
        r = check_fidelity(spec, device, samples, seed, max_ratio, round_to, progress=not json_out)
        if json_out:
            print_json({k: v for k, v in r.items() if not k.endswith("_ms")})
            return

        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.0f}%"

        print_table(
            f"LUT fidelity: {r['model']} on {r['device']} ({samples} random policies, round_to {round_to}; "
            f"live = {r['estimator']} of the device's rounds; calibrated on {r['calibration_runs']} live runs)",
            ["predictor", "within ±5%", "within ±10%", "MAPE", "Kendall tau"],
            [
                [
                    "LUT + correction",
                    pct(r["within_5pct"]),
                    pct(r["within_10pct"]),
                    f"{100 * r['mape']:.1f}%",
                    f"{r['kendall_tau']:.3f}",
                ],
                ["FLOPs", "-", pct(r["flops_within_10pct"]), f"{100 * r['flops_mape']:.1f}%", f"{r['flops_kendall_tau']:.3f}"],
                [
                    "live measured again",
                    pct(r["live_repeat_within_5pct"]),
                    pct(r["live_repeat_within_10pct"]),
                    "-",
                    "-" if r["live_repeat_kendall_tau"] is None else f"{r['live_repeat_kendall_tau']:.3f}",
                ],
            ],
        )
