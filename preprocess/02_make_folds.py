"""Step 02: patient-grouped, label-stratified folds -> CSV with a `fold` column (one row per series).

    python preprocess/02_make_folds.py --data ROOT --out folds.csv [--config FILE] [key=value ...]

Writes OUT and OUT's resolved config beside it (OUT.config.yaml); a rerun with the same labels
and config does nothing.
"""

import argparse
import hashlib
import sys
from pathlib import Path

import pandas as pd
import yaml

from volslice.config import load_config, to_dict
from volslice.data.folds import make_folds
from volslice.io import atomic_write_csv, atomic_write_text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="competition data root")
    parser.add_argument("--out", type=Path, required=True, help="folds CSV to write")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. folds.n_folds=5")
    args = parser.parse_args(argv)
    cfg = load_config(*args.config, overrides=args.overrides).folds
    inputs = [args.data / "train.csv", args.data / "train_series_meta.csv"]
    record = {"folds": to_dict(cfg), "inputs_sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs}}
    record_path = args.out.with_name(args.out.name + ".config.yaml")
    if args.out.exists() and record_path.exists() and yaml.safe_load(record_path.read_text()) == record:
        print(f"{args.out} is up to date; nothing to do")
        return 0
    try:
        folds = make_folds(pd.read_csv(inputs[0]), pd.read_csv(inputs[1]), cfg.n_folds, cfg.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    atomic_write_csv(args.out, folds)
    atomic_write_text(record_path, yaml.safe_dump(record, sort_keys=True))
    counts = folds.drop_duplicates("patient_id").groupby(["fold", "stratum"]).size().unstack(fill_value=0)
    print(f"{cfg.n_folds} folds written to {args.out}\n{counts.to_string()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
