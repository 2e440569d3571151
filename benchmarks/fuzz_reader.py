"""The reader's fuzzer, longer than the test's run: damaged copies of real and synthetic DICOM files
through ``read_series`` (in a child process it may kill) and through step 01 (``volslice cache``
in a subprocess), with the count of cases and findings per damage kind.

    python benchmarks/fuzz_reader.py --work work/fuzz [--cases 1500] [--seed 11]

A finding is a case whose reader died (crash) or that lost a file it should not have (lost).
Exits 1 if there is any. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import time
from pathlib import Path

from volslice.config import SyntheticConfig
from volslice.synthetic.damage import (
    DAMAGE_KINDS,
    fuzz_cache_step,
    fuzz_reader,
    make_cases,
    real_sources,
    synthetic_sources,
)
from volslice.synthetic.generate import generate

OUTCOMES = ("read", "named", "lost", "crash")


def sources(work: Path) -> dict:
    small = dict(train_patients=1, test_patients=0, extra_unlabeled=0, size=64, slices_min=6, slices_max=8,
                 workers=1, segmentation_fraction=0.0, two_series_fraction=0.0)
    generate(SyntheticConfig(**small, seed=3, compression="rle"), work / "rle")
    generate(SyntheticConfig(**small, seed=4, compression="none"), work / "raw")
    generate(SyntheticConfig(**small, seed=5, compression="j2k"), work / "j2k")
    found = dict(real_sources())
    for name in ("rle", "raw", "j2k"):
        found.update({f"{k}_{name}": v for k, v in synthetic_sources(work / name, 1).items()})
    return found


def table(title: str, outcomes) -> str:
    counts = collections.Counter((o.case.kind, o.outcome) for o in outcomes)
    lines = [f"**{title}**", "", "| damage | " + " | ".join(OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 1) + "|"]
    for kind in DAMAGE_KINDS:
        lines.append(f"| {kind} | " + " | ".join(str(counts[(kind, o)]) for o in OUTCOMES) + " |")
    lines.append("| all | " + " | ".join(str(sum(counts[(k, o)] for k in DAMAGE_KINDS)) for o in OUTCOMES) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/fuzz"))
    parser.add_argument("--cases", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    found = sources(args.work)
    cases = make_cases(found, args.work / "cases", args.cases, args.seed)
    print(f"{len(cases)} cases from {len(found)} sources: {', '.join(sorted(found))}\n")
    findings = 0
    for title, run in (("read_series (child process)", lambda: fuzz_reader(cases, args.work / "read_series")),
                       ("step 01 (volslice cache, 2 workers)", lambda: fuzz_cache_step(cases, args.work / "step01"))):
        start = time.perf_counter()
        outcomes = run()
        print(table(f"{title}, {time.perf_counter() - start:.0f} s", outcomes) + "\n")
        bad = [o for o in outcomes if o.outcome in ("lost", "crash")]
        findings += len(bad)
        for o in bad[:20]:
            print(f"- {o.outcome}: {o.case.source} {o.case.kind} {o.case.damaged}: {o.detail}")
    print(f"findings: {findings}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
