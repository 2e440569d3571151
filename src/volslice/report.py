"""A pipeline run's ``report.json``: started fresh by each run with where it came from, filled in
by each step (``io.update_json``), and read back as a table a person can take in at a glance."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from volslice.io import atomic_write_json
from volslice.runs import provenance


def start_report(path, **context) -> dict:
    """A fresh report at ``path`` (a rerun's stale keys gone): the time, commit and package versions
    (``runs.provenance``) and ``context`` (the data folder, the configs)."""
    report = {"provenance": {**provenance(), **{k: str(v) for k, v in context.items()}}}
    atomic_write_json(path, report)
    return report


def summary_table(report: dict) -> pd.DataFrame:
    """What the steps recorded, one row per figure: the constant baselines, the OOF and test scores
    with their ratio to the best constant, and each organ's segmentation Dice."""
    rows = []

    def add(what: str, key: str, versus: str | None = None):
        if report.get(key) is None:
            return
        ratio = report[key] / report[versus] if versus and report.get(versus) else None
        rows.append({"figure": what, "value": report[key], "x best constant": ratio})

    add("test: best constant", "best_constant")
    add("test: raw prior", "prior_baseline", "best_constant")
    add("test: submission", "test", "best_constant")
    add("OOF: best constant", "oof_best_constant")
    add("OOF: raw prior", "oof_prior", "oof_best_constant")
    add("OOF: models", "oof", "oof_best_constant")
    add("OOF: calibrated (nested)", "oof_calibrated", "oof_best_constant")
    for organ, dice in (report.get("segmentation_dice") or {}).items():
        rows.append({"figure": f"segmentation Dice: {organ}", "value": dice, "x best constant": None})
    return pd.DataFrame(rows, columns=["figure", "value", "x best constant"])


def describe(path) -> str:
    """The report at ``path`` as a printed table."""
    report = json.loads(Path(path).read_text())
    table = summary_table(report)
    if table.empty:
        return f"{path}: no scores recorded yet"
    text = table.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.4f}")
    made = report.get("provenance", {})
    return f"{path} ({made.get('written_at', 'time unknown')}, commit {str(made.get('commit'))[:10]})\n{text}"
