"""The label-efficiency benchmark's resumable table: which rows of a published table count as
finished runs, and the report drawn from them."""

import argparse
import subprocess
import sys

import pandas as pd
import pytest

from volslice.config import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
import bench_label_efficiency as bench  # noqa: E402


@pytest.fixture(autouse=True)
def in_the_project(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)  # the benchmark names its configs from the project's root


def arguments(**changes) -> argparse.Namespace:
    values = dict(config="configs/demo.yaml", patients=160, set_seed=5151, extra=160, steps=1000, pretrain_epochs=24,
                  pretrain_seed=0, fold=[0], overrides=[])
    return argparse.Namespace(**{**values, **changes})


def table(args, scores: dict) -> pd.DataFrame:
    """Rows as the benchmark writes them: (arm, share, seed) -> score, the best constant at 1.0."""
    return pd.DataFrame([{"arm": arm, "fraction": fraction, "seed": seed, "score": score, "best constant": 1.0,
                          "mAP": 2 - score, **bench.settings(args)} for (arm, fraction, seed), score in scores.items()])


def test_only_rows_of_the_same_settings_count_as_finished(tmp_path):
    args = arguments()
    path = tmp_path / "label_efficiency.csv"
    rows = pd.concat([table(args, {("scratch", 1.0, 0): 1.1, (bench.VOCO_EXTRA, 0.25, 1): 0.8}),
                      table(arguments(steps=300), {("scratch", 1.0, 1): 1.2}),
                      table(arguments(overrides=["train.lr=1e-3"]), {("scratch", 1.0, 2): 1.3})])
    rows.to_csv(path, index=False)
    done = bench.finished_rows(path, bench.settings(args))
    assert sorted(done) == [("2D-VoCo (+ extra volumes)", 0.25, 1), ("scratch", 1.0, 0)]
    assert done["scratch", 1.0, 0]["score"] == 1.1
    assert bench.finished_rows(None, bench.settings(args)) == {}
    assert bench.settings(arguments(fold=[1, 0])) == bench.settings(arguments(fold=[0, 1, 0]))
    assert bench.settings(arguments(config="configs/default.yaml"))["config hash"] != bench.settings(args)["config hash"]


def test_a_run_held_twice_is_refused(tmp_path):
    path = tmp_path / "label_efficiency.csv"
    table(arguments(), {("scratch", 1.0, 0): 1.1}).pipe(lambda t: pd.concat([t, t])).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"holds the run \(scratch, 100 %, seed 0\) twice"):
        bench.finished_rows(path, bench.settings(arguments()))


def test_the_published_table_resumes_under_its_documented_settings():
    """docs/claims/label_efficiency.csv was made by ``--fold 0`` with every other option at its default."""
    path = PROJECT_ROOT / "docs" / "claims" / "label_efficiency.csv"
    done = bench.finished_rows(path, bench.settings(arguments()))
    assert len(done) == len(pd.read_csv(path)) >= 15
    assert {(arm, 1.0, seed) for arm in ("scratch", "ImageNet", bench.VOCO_EXTRA, bench.VOCO_SERIES, bench.SINGLE)
            for seed in (0, 1, 2)} <= set(done)


def test_a_resumed_tables_rows_outside_the_plan_are_carried_into_the_new_table(tmp_path):
    """Every planned run finished in the resumed table: nothing is trained or prepared, and its row of
    a stage outside ``--stages`` stays in the new table."""
    args = arguments()
    scores = {(arm, 1.0, seed): 1.0 + seed / 10 for arm in ("scratch", bench.VOCO_EXTRA) for seed in (0, 1)}
    scores[bench.VOCO_SERIES, 1.0, 0] = 0.9
    resumed = tmp_path / "resumed.csv"
    table(args, scores).to_csv(resumed, index=False)
    run = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "bench_label_efficiency.py"),
                          "--work", str(tmp_path / "work"), "--fold", "0", "--stages", "1", "--seeds", "0", "1",
                          "--resume-from", str(resumed), "--publish", str(tmp_path / "published")],
                         capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    published = pd.read_csv(tmp_path / "published" / "label_efficiency.csv")
    assert len(published) == 5 and (published.arm == bench.VOCO_SERIES).sum() == 1
    assert not (tmp_path / "work" / "data").exists()  # nothing to train: no set made


def test_a_table_without_settings_or_no_file_is_refused_in_one_line(tmp_path):
    old = tmp_path / "old.csv"
    table(arguments(), {("scratch", 1.0, 0): 1.1}).drop(columns=["steps", "config hash"]).to_csv(old, index=False)
    with pytest.raises(ValueError, match="has no column config hash, steps"):
        bench.finished_rows(old, bench.settings(arguments()))
    run = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "bench_label_efficiency.py"),
                          "--work", str(tmp_path / "work"), "--resume-from", str(tmp_path / "missing.csv")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].endswith("missing.csv is not a file")
    assert not (tmp_path / "work").exists()


def test_the_report_counts_the_seeds_below_the_best_constant_and_pairs_the_arms(tmp_path):
    args = arguments(publish=tmp_path / "published")
    scores = {("scratch", 1.0, 0): 1.10, ("scratch", 1.0, 1): 1.12, ("scratch", 1.0, 2): 1.11,
              (bench.VOCO_EXTRA, 1.0, 0): 0.80, (bench.VOCO_EXTRA, 1.0, 1): 0.85, (bench.VOCO_EXTRA, 1.0, 2): 1.05}
    table(args, scores).to_csv(tmp_path / "label_efficiency.csv", index=False)  # written after every run
    bench.report(table(args, scores), args, bench.settings(args), tmp_path)
    text = (tmp_path / "label_efficiency.md").read_text()
    assert "| scratch | 1.000 | 1.110 | 0.010 | 0.890 | 0.010 | 0 of 3 |" in text
    assert "| 2D-VoCo (+ extra volumes) | 1.000 | 0.900 | 0.132 | 1.100 | 0.132 | 2 of 3 |" in text
    assert "- 2D-VoCo beats scratch at 100 % (score, seeds [0, 1, 2]): " in text
    # 2 of 3 seeds leave the constant against none: both successes among A's 3 of the 6 seeds, C(4,1)/C(6,3) = 0.2
    assert ("- 2D-VoCo beats scratch at 100 % (seeds below the best constant): 2 of 3 against 0 of 3, "
            "one-sided Fisher exact p = 0.200") in text
    assert "config" not in text.split("\n", 2)[2].split("Mean")[0]  # the settings stay out of the per-run table
    assert sorted(p.name for p in (tmp_path / "published").iterdir()) == [
        "label_efficiency.csv", "label_efficiency.md", "label_efficiency.png"]
