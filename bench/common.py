"""Shared by the bench scripts: the machine description and writing one section of docs/benchmarks.md."""

from __future__ import annotations

import json
import platform
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "onnxruntime", "openvino", "onnx", "torch_pruning", "optuna", "stable_baselines3", "gymnasium"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }


def preset(ap: Any, args: Any, **values: Any) -> None:
    """A preset mode (--quick, --full): each option still at its default takes the preset's value;
    one the user set on the command line stays as given."""
    for name, value in values.items():
        if getattr(args, name) == ap.get_default(name):
            setattr(args, name, value)


def header(info: dict[str, Any]) -> str:
    v = ", ".join(f"{k} {val}" for k, val in info["versions"].items())
    return (
        f"Command: `{info['command']}`  \nMachine: {info['cpu']}, {info['cores']} cores; Python {info['python']}; {v}  \n"
        f"Date: {info['date']}\n"
    )


def load_line(load: dict[str, float], cores: int, own_processes: int = 1) -> str:
    """The docs' line on the 1-minute load at a run's start and end; it warns only when the load exceeds
    the run's own worker processes by half a process (another process then shared the CPU)."""
    busy = max(load.values()) > own_processes + 0.5
    return (
        f"Load average (1 min) at start {load['start']:.2f}, at end {load['end']:.2f} on {cores} cores"
        + (f" (this run's own {own_processes} worker processes count in it)" if own_processes > 1 else "")
        + (": **other processes shared the CPU, so live latencies are inflated and noisy**" if busy else "")
        + ".\n"
    )


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section between `<!-- name:start -->` and `<!-- name:end -->`."""
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    text = (
        BENCHMARKS_MD.read_text()
        if BENCHMARKS_MD.exists()
        else "# Benchmarks\n\nEvery number here comes from a script in `bench/`; each section shows its command, machine and date.\n"
    )
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(with_index(text))


SECTION = re.compile(r"<!-- (?P<name>[\w.-]+):start -->\n(?P<body>.*?)\n<!-- (?P=name):end -->", re.S)
INDEX = "index"  # the contents list's own markers


def with_index(text: str) -> str:
    """The document with its contents list rebuilt: every section's first heading, in document
    order, linked to an anchor named after the section (added where missing), because many
    sections share a heading and only their names tell them apart."""
    text = re.sub(r"(<!-- (?!index:)([\w.-]+):start -->\n)(?!<a id=)", lambda m: f'{m[1]}<a id="{m[2]}"></a>\n\n', text)
    entries = []
    for m in SECTION.finditer(text):
        if m["name"] != INDEX:
            heading = next((line[3:].strip() for line in m["body"].splitlines() if line.startswith("## ")), m["name"])
            entries.append(f"- [{heading}](#{m['name']}) (`{m['name']}`)")
    block = f"<!-- {INDEX}:start -->\n## Contents\n\n" + "\n".join(entries) + f"\n<!-- {INDEX}:end -->"
    pattern = re.compile(rf"<!-- {INDEX}:start -->.*?<!-- {INDEX}:end -->", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text)
    first = re.search(r"<!-- [\w.-]+:start -->", text)  # before the first section
    at = first.start() if first else len(text)
    return text[:at] + block + "\n\n" + text[at:]


def mean_std(values: list[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std, count) of the values that are numbers (None and NaN skipped); std 0 for one."""
    import math

    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None, 0
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, sd, len(v)


def rewrite_section(name: str, markdown: Any, note: str = "") -> None:
    """`--markdown-only`: the docs section `name` again from bench/results/<name>.json, measuring nothing
    (`markdown` takes the loaded JSON). A `note` (the section's "what this says" paragraph) is kept
    in the results file first, so a later rewrite keeps it."""
    res = json.loads((RESULTS / f"{name}.json").read_text())
    if note:
        res["note"] = note
        write_json(name, res)
    write_section(name, markdown(res))
    print(f"wrote docs/benchmarks.md ({name} section)")


def write_json(name: str, obj: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return path


def add_output_options(ap: Any, name: str) -> None:
    """A bench's output options: where its results go, and rewriting its docs section (`publish`)."""
    ap.add_argument("--results-name", default=name, help="bench/results/<name>.json and the docs section's name")
    ap.add_argument("--no-doc", action="store_true", help="write the JSON only")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the docs section from the JSON, measuring nothing")
    ap.add_argument("--note", default="", help="with --markdown-only: the section's closing paragraph, kept in the JSON")


def publish(args: Any, res: dict[str, Any], markdown: Any) -> None:
    """The results JSON, the docs section unless --no-doc, and the section on stdout."""
    write_json(args.results_name, res)
    if not args.no_doc:
        write_section(args.results_name, markdown(res))
    print(markdown(res))


def note_lines(res: dict[str, Any]) -> list[str]:
    """The section's closing paragraph (`--note`), as markdown lines to append."""
    return ["", res["note"]] if res.get("note") else []
