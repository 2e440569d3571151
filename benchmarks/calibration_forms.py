"""Calibration forms on finished demos: none, a shift per group, a shift per column.

    python benchmarks/calibration_forms.py WORK [WORK ...]

WORK is a ``make demo`` work folder (``WORK/runs/classifier``, ``WORK/runs/organs``; the data in
``WORK/data`` or beside WORK, as ``demo_seeds.py`` lays it out). Per folder and form: the OOF score with each fold calibrated by a fit
made without it (the honest estimate, on which a form is chosen), and for information the test
score of the ensemble (with the fit's run weights) with the fit on every OOF row applied. The
uncalibrated test rows are predicted once per set of weights (``WORK/calibration_forms/``). Prints
a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from common import markdown
from volslice import competitions
from volslice.calibration import CALIBRATIONS, EnsembleFit
from volslice.inference import predict
from volslice.classifier.run import ensemble_oof


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("works", type=Path, nargs="+")
    args = parser.parse_args()
    comp = competitions.get("rsna2023")
    rows = []
    for work in args.works:
        data = next(p for p in (work.parent / "data", work / "data") if (p / "train.csv").exists())
        runs = [work / "runs" / "classifier", work / "runs" / "organs"]
        out = work / "calibration_forms"
        out.mkdir(exist_ok=True)
        solution = comp.read_solution(data)
        raw_rows = {}  # the uncalibrated ensemble's test rows, per set of run weights
        for per in CALIBRATIONS:
            summary = ensemble_oof(runs, data, fit=out / f"ensemble_{per}.json", calibration=per)
            fit = EnsembleFit.load(out / f"ensemble_{per}.json")
            key = tuple(round(w, 6) for w in fit.weights)
            raw_file = out / f"raw_test_{'_'.join(map(str, key))}.csv"
            if not raw_file.exists():
                predict(data, runs, weights=fit.weights, device="cpu", progress=False).submission.to_csv(
                    raw_file, index=False)
            raw = raw_rows.setdefault(key, pd.read_csv(raw_file))
            rows.append({"set": work.parent.name, "calibration": per, "OOF": summary["oof"],
                         "OOF calibrated (nested)": summary["oof_calibrated"],
                         "/ best constant": summary["oof_calibrated_ratio"],
                         "test": comp.score(solution, fit.apply(comp, raw)).score,
                         "test raw": comp.score(solution, raw).score})
    print(markdown(pd.DataFrame(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
