"""The constant baselines: the training prior and the best constant, the same for every test id.

    volslice baseline --data ROOT --submission submissions/prior_baseline.csv
        [--best-constant-submission submissions/best_constant.csv] [--report WORK/report.json]

Writes two validated submissions: the training label frequencies (``--submission``) and the best
constant, the one that scores best on the training labels (``--best-constant-submission``,
default ``best_constant.csv`` beside ``--submission``). Where the data root has ``test_solution.csv``
(the synthetic set does; the real competition keeps it hidden) both are scored, beside the
competition's simpler per-group form of the best constant, and the report records
``prior_baseline``, ``prior_baseline_groups``, ``best_constant``, ``best_constant_groups`` and
``best_constant_per_group`` (null where the test labels are unknown).
"""

from __future__ import annotations

from pathlib import Path

from volslice.cli import add_competition_argument


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--data", type=Path, required=True, help="competition data root")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s): their competition")
    add_competition_argument(parser)
    parser.add_argument("--submission", type=Path, default=Path("submissions/prior_baseline.csv"))
    parser.add_argument("--best-constant-submission", type=Path,
                        help="where the best constant submission goes (default: best_constant.csv beside --submission)")
    parser.add_argument("--report", type=Path, help="JSON report to record the scores in")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice import competitions
    from volslice.evaluation import best_constant_baseline, prior_baseline, score_if_labelled
    from volslice.io import atomic_write_csv, update_json

    from volslice.config import load_config

    comp = competitions.get(args.competition or load_config(*args.config).competition)
    best_path = args.best_constant_submission or args.submission.with_name("best_constant.csv")
    prior, best = prior_baseline(args.data, comp), best_constant_baseline(args.data, comp)
    atomic_write_csv(args.submission, prior)
    atomic_write_csv(best_path, best)
    print(f"prior baseline submission ({len(prior)} rows) written to {args.submission}")
    print(f"best constant submission written to {best_path}")
    result = score_if_labelled(args.data, prior, comp)
    if result is None:
        print(f"no test labels in {args.data}, so no score")
        scores = {"prior": None, "per-group": None, "best constant": None}
    else:
        print(f"prior baseline score {result.score:.4f}  " + "  ".join(f"{g} {v:.4f}" for g, v in result.group_losses.items()))
        per_group = best_constant_baseline(args.data, comp, per_group=True)
        scores = {"prior": result, "per-group": score_if_labelled(args.data, per_group, comp),
                  "best constant": score_if_labelled(args.data, best, comp)}
        print_table(scores)
    if args.report:
        update_json(args.report, **report_values(scores), prior_submission=str(args.submission),
                    best_constant_submission=str(best_path))
    return 0


def print_table(scores: dict) -> None:
    """The constant baselines' test scores, one line each."""
    print("constant baselines on the test labels:")
    for name, result in scores.items():
        print(f"  {name:<15}{result.score:.4f}")


def report_values(scores: dict) -> dict:
    """The report's keys for the scores (``ScoreResult`` or None)."""
    def value(name, part):
        return None if scores[name] is None else getattr(scores[name], part)

    return {"prior_baseline": value("prior", "score"), "prior_baseline_groups": value("prior", "group_losses"),
            "best_constant": value("best constant", "score"),
            "best_constant_groups": value("best constant", "group_losses"),
            "best_constant_per_group": value("per-group", "score")}
