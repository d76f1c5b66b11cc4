"""Study artifacts of a search job: what optuna-dashboard shows beside the trials.

Each trial carries its policy JSON as a trial artifact, attached when it was recorded (Optuna
refuses to change a finished trial, so a best trial cannot get one later). At report time every
study of the job also gets the Pareto plot, the markdown report and the job's best policy per
budget as *study* artifacts, and a note listing the best trials. Files live in
`runs/<name>/artifacts` (`optuna.artifacts.FileSystemArtifactStore`); an updated file keeps its
artifact id (its content is replaced), so reports do not pile up copies.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from . import store
from .job import Job, load_run_job

log = logging.getLogger(__name__)


INDEX_FILE = "_uploaded.json"


def attach_artifacts(
    run_dir: str | Path, *, storage: Any = None, job: Job | None = None, summary: dict[str, Any] | None = None
) -> int:
    """Attach plot, report and best policies to the job's studies; returns how many were uploaded."""
    import optuna

    run_dir = Path(run_dir)
    job = job or load_run_job(run_dir)
    storage = storage or store.open_storage(job.storage_url)
    if summary is None:
        path = run_dir / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
    astore = store.artifact_store(run_dir)
    index_path = run_dir / store.ARTIFACT_DIR / INDEX_FILE
    try:
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    except json.JSONDecodeError:
        index = {}
    studies = store.study_names(storage, job.name)
    files: list[tuple[Path, str, str]] = []
    for name, mime in (("pareto.png", "image/png"), ("report.md", "text/markdown")):
        if (run_dir / name).is_file():
            files.append((run_dir / name, name, mime))
    best = summary.get("best") or {}
    for label, b in best.items():
        if b and Path(b["policy_path"]).is_file():
            files.append((Path(b["policy_path"]), f"best-{label}.json", "application/json"))
    uploads = 0
    for agent, sname in studies.items():
        study_id = storage.get_study_id_from_name(sname)
        for path, filename, mime in files:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            key = f"{sname}|{filename}"
            entry = index.get(key)
            if isinstance(entry, dict) and entry.get("id"):
                if entry.get("sha256") != digest:  # same artifact id, new content: no new journal entry
                    import io

                    astore.write(entry["id"], io.BytesIO(data))
                    entry["sha256"] = digest
                    uploads += 1
                continue
            attr, meta = store.write_artifact(astore, data, filename, mime)
            storage.set_study_system_attr(study_id, attr, meta)
            index[key] = {"id": json.loads(meta)["artifact_id"], "sha256": digest}
            uploads += 1
        note = _note(agent, best, summary)
        nkey = f"{sname}|note"
        ndigest = hashlib.sha256(note.encode()).hexdigest()
        if index.get(nkey) != ndigest:
            try:
                from optuna_dashboard import save_note

                save_note(optuna.load_study(study_name=sname, storage=storage), note)
                index[nkey] = ndigest
            except Exception as exc:
                log.debug("save_note failed: %s", exc)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    index_path.write_text(json.dumps(index, indent=1))
    return uploads


def _note(agent: str, best: dict[str, Any], summary: dict[str, Any]) -> str:
    dense = summary.get("dense") or {}
    lines = [f"## hilprune search `{summary.get('job', '')}`: agent `{agent}`", ""]
    if dense:
        lines.append(
            f"Dense model: accuracy {dense.get('accuracy', float('nan')):.4f}, latency {dense.get('latency_ms', float('nan')):.3f} ms."
        )
        lines.append("")
    lines += ["| budget | best agent | trial | accuracy | latency ms | speedup |", "|---|---|---|---|---|---|"]
    for label, b in best.items():
        if b:
            lines.append(
                f"| {label} | {b['agent']} | {b['trial']} | {b['accuracy']:.4f} | {b['latency_ms']:.3f} | {b['speedup'] or 0:.2f}x |"
            )
        else:
            lines.append(f"| {label} | - | - | - | - | - |")
    lines += [
        "",
        "Study artifacts: `pareto.png`, `report.md` and `best-<budget>.json` (the best policy of the whole job "
        "per budget, whichever agent found it); each trial carries its own `policy.json`.",
    ]
    return "\n".join(lines)
