"""`hilprune search`, `report`, `export`, `dashboard` and `demo`: search jobs from the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import HilpruneError
from ..quantize.defaults import CALIBRATION_SIZE, TOLERANCE
from .options import AccuracyToleranceOpt, CalibrationSizeOpt, DataDirOpt, JsonOpt, NumClassesOpt, SchemesOpt
from .output import console, print_json

DEMO_EVALS = 1800  # PPO episodes (~85 ms each for digits-cnn on 2 busy cores, plus start-up): about 3 minutes in all


DEMO_FALLBACK_BUDGET = "0.7"


def _search_flags(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None and not (isinstance(v, list) and not v)}


def _run(job: Any, json_out: bool, progress: bool, exit_on_failure: bool = True) -> tuple[dict[str, Any], dict[str, str]]:
    from search.job import JOB_FILE, check_compatible, load_run_job
    from search.report import print_summary
    from search.runner import run_search

    if (Path(job.out) / JOB_FILE).is_file():  # refuse a mismatched run directory before announcing anything
        check_compatible(job, load_run_job(job.out))
    if not json_out:
        console.print(
            f"search [bold]{job.name}[/]: {job.model}"
            + (f" on {job.dataset}" if job.dataset else "")
            + f", device {job.device}, budgets {', '.join(job.budgets)}, agents {', '.join(job.agents)}, "
            f"{job.evals} evaluations each  ->  {job.out}"
        )
    try:
        outcome = run_search(job, progress=progress)
    except KeyboardInterrupt:  # typer turns it into a plain return value without a message: exit 130 here
        raise SystemExit(130) from None
    summary = outcome.summary
    if json_out:
        print_json(summary | {"ran": outcome.ran, "failed": outcome.failed})
    else:
        print_summary(summary)
        for agent, n in outcome.short.items():
            console.print(f"{agent}: done after {job.evals - n} evaluation(s), nothing new to try")
        if outcome.failed:
            for agent, err in outcome.failed.items():
                console.print(f"[red]{agent} failed:[/] {err}")
            console.print("Rerun the same command to retry the failed agents (finished trials are kept).")
    if outcome.failed and exit_on_failure:
        raise SystemExit(1)  # (typer.Exit is returned, not raised, by app() outside standalone mode)
    return summary, outcome.failed


def _print_best_policy(summary: dict[str, Any]) -> None:
    from rich.table import Table

    from ..policy import Policy
    from .policy_cmd import channels_text

    for label, b in summary["best"].items():
        if not b:
            console.print(f"budget {label}: no policy within the budget yet")
            continue
        pol = Policy.load(b["policy_path"])
        console.print(
            f"\n[bold]best policy for budget {label}[/] ({summary['budgets_ms'][label]:.4g} ms): {b['agent']} trial {b['trial']}, "
            f"val accuracy {b['accuracy']:.4f} (dense {summary['dense']['accuracy']:.4f}), "
            f"{b['latency_ms']:.4g} ms ({summary.get('latency_source', 'lut')}), {b['speedup'] or 0:.2f}x faster"
        )
        t = Table()
        for col in ("group", "kind", "channels", "pruned"):
            t.add_column(col)
        for g in pol.groups:
            t.add_row(
                g.name,
                g.kind,
                f"{channels_text(g.channels_before, g.units)} -> {channels_text(g.channels_after, g.units)}",
                f"{g.ratio:.0%}",
            )
        console.print(t)
        console.print(f"policy: {b['policy_path']}")


def register(app: typer.Typer) -> None:
    @app.command("search")
    def search_cmd(
        model: Annotated[
            str | None, typer.Option("--model", "-m", help="Zoo name, 'file.py:factory' or 'package.module:factory'.")
        ] = None,
        checkpoint: Annotated[
            Path | None, typer.Option("--checkpoint", "-c", help="Dense weights (default: the shipped checkpoint).")
        ] = None,
        input_shape: Annotated[
            str | None, typer.Option("--input-shape", help="C,H,W of one input (overrides the data set's).")
        ] = None,
        num_classes: NumClassesOpt = None,
        dataset: Annotated[
            str | None,
            typer.Option("--dataset", "-d", help="digits, fashion-mnist or cifar10 (accuracy on its validation split)."),
        ] = None,
        data_dir: DataDirOpt = None,
        device: Annotated[
            str | None,
            typer.Option(
                "--device", help="Target device: built-in name, TOML file or remote:http://HOST:PORT [default: ort-cpu-1t]."
            ),
        ] = None,
        budget: Annotated[
            list[str] | None,
            typer.Option(
                "--budget",
                "-b",
                help="Latency budget: fraction of the dense latency (0.5) or milliseconds (1.2ms); repeat or comma-separate [default: 0.5].",
            ),
        ] = None,
        agent: Annotated[
            list[str] | None,
            typer.Option(
                "--agent",
                "-a",
                help="Agents, comma-separated or repeated: uniform, random, tpe, nsga2, autoprune, ppo, sac [default: uniform,random].",
            ),
        ] = None,
        evals: Annotated[
            int | None,
            typer.Option("--evals", "-n", help="Evaluations per agent in total; rerunning continues up to this [default: 20]."),
        ] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Random seed [default: 0].")] = None,
        val_size: Annotated[
            int | None,
            typer.Option(
                "--val-size",
                help="Validation images each evaluation scores on (the first ones of the val split) "
                "[default: 5000, all of Fashion-MNIST's; a resumed run keeps its own].",
            ),
        ] = None,
        latency_source: Annotated[
            str | None,
            typer.Option(
                "--latency-source",
                help="Latency each trial is judged by: lut (predicted), live (measured) or hybrid [default: lut].",
            ),
        ] = None,
        proxy: Annotated[
            str | None,
            typer.Option(
                "--proxy",
                help="Accuracy proxy each policy is scored by: bn (BN recalibration), bn:N (on N batches), kd:N (then N steps "
                "of distillation from the dense model) or a ladder bn:10,kd:20,kd:80; tpe and nsga2 climb the ladder with "
                "successive halving. A leading ls (ls:N) first refits the layers that lost input channels by least squares "
                "on N train images (64), as the export does before its fine-tune [default: ls,kd:40, or the run directory's].",
            ),
        ] = None,
        precision: Annotated[
            str | None,
            typer.Option(
                "--precision",
                help="The graph each policy is judged as: fp32; int8 (every layer INT8, in the scheme the device's precision "
                "table found fastest: widths searched under INT8 latency and accuracy); or mixed (random, tpe, nsga2 and ppo "
                "also mark each group fp32 or int8; uniform and autoprune search the all-INT8 graph). INT8 is kept only where "
                "the device prices it faster: a device whose INT8 runs slower searches fp32, and a mixed search keeps fp32 on "
                "each layer whose INT8 kernels price slower [default: int8, or the run directory's].",
            ),
        ] = None,
        reward: Annotated[
            str | None,
            typer.Option(
                "--reward",
                help="Reward for RL agents (envs.rewards): constrained, mnasnet, penalty, try_and_learn [default: constrained].",
            ),
        ] = None,
        max_ratio: Annotated[
            float | None,
            typer.Option("--max-ratio", help="Largest share of a group's channels a policy may remove, in (0, 1) (default 0.9)."),
        ] = None,
        round_to: Annotated[
            int | None,
            typer.Option(
                "--round-to",
                help="Keep channel counts multiples of this (8 or 16 suit onnxruntime's blocked CPU kernels; odd counts can run slower than dense) [default: 1].",  # noqa: E501
            ),
        ] = None,
        remove_blocks: Annotated[
            str | None,
            typer.Option(
                "--remove-blocks",
                help="Remove whole residual blocks before searching the widths: a count N (the N whose removal alone "
                "costs the least val accuracy after BN recalibration) or block names (layer3.7,layer2.8; 'hilprune policy "
                "init --remove-blocks list' lists them). Budgets stay fractions of the model as given. Pays most on INT8, "
                "where narrow layers keep their fixed costs [default: none].",
            ),
        ] = None,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory [default: runs/<name>].")] = None,
        name: Annotated[
            str | None,
            typer.Option("--name", help="Job name (studies are '<name>/<agent>') [default: <model>-<dataset>-<device>]."),
        ] = None,
        storage: Annotated[
            str | None,
            typer.Option(
                "--storage",
                help="Optuna storage: a journal file path or an RDB URL (postgresql://...) [default: <out>/study.journal].",
            ),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option(
                "--workers", "-j", help="Processes per Optuna agent (tpe, nsga2, autoprune) on the same storage [default: 1]."
            ),
        ] = None,
        job_file: Annotated[Path | None, typer.Option("--job", help="Job TOML file (flags override its fields).")] = None,
        no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Search layer-wise pruning policies under latency budgets; resumes the job in --out if it exists.

        Every evaluation is a trial in an Optuna storage (one study per agent); at the end the best
        policy per budget is written to <out>/best/<budget>.json with a Pareto plot and a report.
        """
        from search.job import resolve_job

        flags = _search_flags(
            model=model,
            checkpoint=str(checkpoint) if checkpoint else None,
            input_shape=input_shape,
            num_classes=num_classes,
            dataset=dataset,
            data_dir=str(data_dir) if data_dir else None,
            device=device,
            budgets=budget,
            agents=agent,
            evals=evals,
            seed=seed,
            val_size=val_size,
            latency_source=latency_source,
            proxy=proxy,
            precision=precision,
            reward=reward,
            out=str(out) if out else None,
            name=name,
            storage=storage,
            workers=workers,
            round_to=round_to,
            max_ratio=max_ratio,
            remove_blocks=remove_blocks,
        )
        job = resolve_job(job_file, **flags)
        _run(job, json_out, progress=not no_progress)

    @app.command("report")
    def report_cmd(
        run_dir: Annotated[Path, typer.Argument(help="A search run directory (runs/<name>).")],
        json_out: JsonOpt = False,
    ) -> None:
        """Best policy per budget, Pareto plot and markdown report of a search run (from its storage)."""
        from search.report import print_summary, write_report

        summary = write_report(run_dir)
        if json_out:
            print_json(summary)
        else:
            print_summary(summary)

    @app.command("export")
    def export_cmd(
        run_dir: Annotated[Path, typer.Argument(help="A search run directory (runs/<name>).")],
        budget: Annotated[
            str, typer.Option("--budget", "-b", help="The budget to export for (as given to search: 0.5 or 1.2ms).")
        ],
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Output folder (model.onnx, pruned.pt, policy.json, MODEL_CARD.md).")
        ],
        trial: Annotated[
            str | None, typer.Option("--trial", help="Export this trial (N, or AGENT:N) instead of the best one.")
        ] = None,
        tie_break: Annotated[
            str | None,
            typer.Option(
                "--tie-break",
                help="Among trials that meet the budget live and whose proxy accuracy lies within one standard error of "
                "the most accurate one (ties the proxy cannot tell apart): macs exports the one keeping the most MACs, "
                "accuracy the most accurate one [default: macs].",
            ),
        ] = None,
        finetune_epochs: Annotated[
            float,
            typer.Option(
                "--finetune-epochs",
                "-e",
                help="Fine-tuning epochs on the train split, distilled from the dense model, cosine schedule, on a GPU "
                "when present (0: none).",
            ),
        ] = 1.0,
        lr: Annotated[float, typer.Option("--lr", help="Fine-tuning learning rate.")] = 0.01,
        reconstruct: Annotated[
            int | None,
            typer.Option(
                "--reconstruct",
                help="Train images on which the layers that lost input channels are refitted by least squares before "
                "fine-tuning (0: none; a pick that removes no channel has none to refit) [default: the search proxy's ls:N, "
                "else 64].",
            ),
        ] = None,
        ridge: Annotated[
            str,
            typer.Option(
                "--ridge",
                help="The least-squares refit's ridge (relative to the mean diagonal of its normal equations): a number, "
                "or auto: each of 0.001, 0.01 and 0.1 refitted and distilled for 40 steps of 64 images, the best on 2000 validation "
                "images kept (no single ridge suits every model: docs/benchmarks.md, export_ridge); with --finetune-epochs 0, 0.1.",
            ),
        ] = "auto",
        no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
        precision: Annotated[
            str,
            typer.Option(
                "--precision",
                help="fp32; int8: onnxruntime static quantization with the scheme the job's device runs fastest whose "
                "validation accuracy holds (fp32 is kept when none does); auto: int8 when the picked policy marks any group "
                "int8 (a search with --precision int8 or mixed; groups marked fp32 stay float), else fp32.",
            ),
        ] = "auto",
        calibration_size: CalibrationSizeOpt = CALIBRATION_SIZE,
        accuracy_tolerance: AccuracyToleranceOpt = 100 * TOLERANCE,
        schemes: SchemesOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Prune, fine-tune and export the best trial that meets a budget by live latency.

        The best: the most accurate by the search's proxy or, among trials within one standard error of it, the one
        keeping the most MACs (--tie-break). --precision int8 then quantizes it with the scheme the job's device runs
        fastest whose validation accuracy holds."""
        from search.export import export_run
        from search.pick import DEFAULT_TIE_BREAK
        from search.ridge import parse_ridge

        from .int8_output import check_precision, print_quantization, quantize_options

        wants_int8 = precision == "auto" or check_precision(precision) == "int8"
        opts = quantize_options(calibration_size, accuracy_tolerance, schemes) if wants_int8 else None
        res = export_run(
            run_dir,
            budget,
            out,
            trial=trial,
            tie_break=tie_break or DEFAULT_TIE_BREAK,
            finetune_epochs=finetune_epochs,
            lr=lr,
            progress=not no_progress and not json_out,
            precision=precision,
            calibration_size=calibration_size,
            accuracy_tolerance=opts.tolerance if opts else TOLERANCE,
            schemes=list(opts.schemes) if opts and opts.schemes else None,
            reconstruct=reconstruct,
            ridge=parse_ridge(ridge),
        )
        if json_out:
            print_json(res)
            return
        if "quantization" in res:
            print_quantization(res["quantization"])
        console.print(
            f"[green]exported[/] {res['agent']} trial {res['trial']} for budget {res['budget']} ({res['budget_ms']:.4g} ms) -> {res['onnx']}"
        )
        pick = res.get("pick") or {}
        if pick.get("tie_break") == "macs" and pick.get("most_accurate") != f"{res['agent']}:{res['trial']}":
            console.print(
                f"  the most MACs among {pick['ties']} trials within {100 * pick['tie_margin']:.1f} points of the most "
                f"accurate one ({pick['most_accurate']}, val {pick['most_accurate_val']:.4f}; --tie-break accuracy exports it)"
            )
        console.print(
            f"test accuracy ({res['precision']}) {res['test_accuracy']:.4f} (before fine-tuning {res['test_accuracy_before_finetune']:.4f}, "
            f"dense {res['dense_test_accuracy']:.4f}); live latency {res['latency_ms']:.4g} ms "
            f"(dense {res['dense_latency_ms']:.4g} ms, {res['speedup'] or 0:.2f}x"
            + (
                f", median of {res['live_measurements']} paired measurements near the budget"
                if res.get("live_measurements", 1) > 1
                else ""
            )
            + f"); ONNX vs torch {res['max_abs_diff']:.1e}"
        )
        if not res["meets_budget"]:
            console.print("[yellow]the exported model is over the budget by live latency[/]")
        console.print(f"policy {res['policy']}, weights {res['pruned']}, model card {res['model_card']}")

    @app.command("dashboard")
    def dashboard_cmd(
        run_dir: Annotated[Path, typer.Argument(help="A search run directory (runs/<name>).")],
        port: Annotated[int, typer.Option("--port", help="Port.")] = 8080,
        host: Annotated[
            str, typer.Option("--host", help="Address to listen on (the dashboard has no authentication: keep it on loopback).")
        ] = "127.0.0.1",
    ) -> None:
        """Serve optuna-dashboard on a search run's storage (Pareto front, trials, policy artifacts)."""
        from search.dashboard import serve

        serve(run_dir, host=host, port=port)

    @app.command("demo")
    def demo_cmd(
        evals: Annotated[int, typer.Option("--evals", "-n", help="Evaluations per agent.")] = DEMO_EVALS,
        out: Annotated[Path, typer.Option("--out", "-o", help="Run directory.")] = Path("runs/demo"),
        fresh: Annotated[bool, typer.Option("--fresh", help="Start over (delete the previous demo run in --out).")] = False,
        device: Annotated[
            str, typer.Option("--device", help="Target device (sim-cpu: a simulated CPU, the same on every machine).")
        ] = "ort-cpu-1t",
        json_out: JsonOpt = False,
    ) -> None:
        """About 3 minutes: PPO and the uniform baseline halve digits-cnn's latency on this CPU; prints the best policy.

        Runs `hilprune search -m digits-cnn -d digits --device ort-cpu-1t --budget 0.5 --agent ppo,uniform`
        into runs/demo (uniform + random when PPO is not installed); rerunning continues it.
        """
        from search.agents import available
        from search.job import JOB_FILE, load_run_job, resolve_job

        agents = ["ppo", "uniform"]
        if not available("ppo"):
            agents = ["uniform", "random"]
            console.print("[yellow]PPO (agent.ppo) is not available here: the demo runs uniform + random search instead[/]")
        if fresh and out.exists():
            if not (out / JOB_FILE).is_file() or load_run_job(out).name != "demo":
                raise HilpruneError(f"--fresh: {out} is not a demo run directory; not deleting it")
            shutil.rmtree(out)
        from envs.errors import BudgetError

        def demo_job(budget: str) -> Any:
            return resolve_job(
                None,
                model="digits-cnn",
                dataset="digits",
                device=device,
                budgets=[budget],
                agents=agents,
                evals=evals,
                seed=0,
                out=str(out),
                name="demo",
                proxy="bn",  # BN recalibration only: 1800 PPO episodes in about 3 minutes (kd:40 would take ~40)
            )

        try:
            summary, failed = _run(demo_job("0.5"), json_out, progress=not json_out, exit_on_failure=False)
        except BudgetError as exc:
            # digits-cnn's kernels take microseconds: on a busy or slow CPU their fixed costs can put
            # half the dense latency out of reach. The demo then shows the search at a reachable budget.
            console.print(f"[yellow]{exc}\nThe demo searches at budget {DEMO_FALLBACK_BUDGET} instead.[/]")
            summary, failed = _run(demo_job(DEMO_FALLBACK_BUDGET), json_out, progress=not json_out, exit_on_failure=False)
        if not json_out:
            _print_best_policy(summary)
            label = next(iter(summary["best"]), "0.5")
            console.print(
                f"\nnext: hilprune export {out} --budget {label} --finetune-epochs 2 --out {out}/export"
                f"\n      hilprune dashboard {out}"
            )
        if failed:
            raise SystemExit(1)
