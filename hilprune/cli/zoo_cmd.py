"""`hilprune zoo`: the models hilprune knows and the checkpoints it ships."""

from __future__ import annotations

import typer

from .options import JsonOpt
from .output import print_json, print_table


def register(app: typer.Typer) -> None:
    @app.command("zoo")
    def zoo_cmd(json_out: JsonOpt = False) -> None:
        """List zoo models and shipped checkpoints with their measured accuracy."""
        from ..models import DESCRIPTIONS, ZOO, shipped_cards

        cards = shipped_cards()
        models = [
            {
                "name": n,
                "description": DESCRIPTIONS.get(n, ""),
                "checkpoints": [
                    {
                        "dataset": c["dataset"],
                        "val_accuracy": c["val_accuracy"],
                        "test_accuracy": c["test_accuracy"],
                        "epochs": c["epochs"],
                        "file": c["checkpoint"],
                    }
                    for c in cards
                    if c["model"] == n
                ],
            }
            for n in ZOO
        ]
        if json_out:
            print_json({"models": models})
            return
        rows = []
        for m in models:
            if not m["checkpoints"]:
                rows.append([m["name"], m["description"], "-", "-", "-"])
            for c in m["checkpoints"]:
                rows.append([m["name"], m["description"], c["dataset"], f"{c['val_accuracy']:.4f}", f"{c['test_accuracy']:.4f}"])
        print_table("hilprune zoo", ["model", "description", "checkpoint dataset", "val top-1", "test top-1"], rows)
