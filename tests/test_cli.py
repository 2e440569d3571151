import ast
import subprocess
import sys

import pytest

from volslice.cli import COMMANDS
from volslice.config import PROJECT_ROOT


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "volslice", "--help"], capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert f"\n    {name}" in out, name
    assert len(list((PROJECT_ROOT / "src" / "volslice" / "cli").glob("[!_]*.py"))) == len(COMMANDS)


def test_the_library_never_imports_a_command():
    offenders = []
    for path in sorted((PROJECT_ROOT / "src" / "volslice").rglob("*.py")):
        if "cli" in path.relative_to(PROJECT_ROOT / "src" / "volslice").parts or path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("volslice.cli")]
    for path in sorted((PROJECT_ROOT / "benchmarks").glob("*.py")):
        offenders += [f"{path.name}: volslice.cli" for _ in [0] if "volslice.cli" in path.read_text()]
    assert offenders == []


def test_numbered_scripts_are_thin_callers():
    for script, command in (("00_make_synthetic.py", "synthetic"), ("01_dicom_to_cache.py", "cache"),
                            ("02_make_folds.py", "folds")):
        out = subprocess.run([sys.executable, str(PROJECT_ROOT / "preprocess" / script), "--help"],
                             capture_output=True, text=True, check=True).stdout
        assert out.startswith(f"usage: volslice {command}"), out[:80]


def test_overrides_given_after_fold_are_overrides_for_train_and_segment():
    from volslice.cli import build_parser, folds_and_overrides

    parser = build_parser()
    for command in (["train", "--data", "d"], ["segment"]):
        base = command + ["--cache", "c", "--folds", "f.csv"]
        args = parser.parse_args(base + ["--fold", "0", "2", "train.epochs=3", "model.weights="])
        assert folds_and_overrides(args) == ([0, 2], ["train.epochs=3", "model.weights="])
        assert folds_and_overrides(parser.parse_args(base + ["--fold", "all"])) == (None, [])
        assert folds_and_overrides(parser.parse_args(base)) == (None, [])
        assert folds_and_overrides(parser.parse_args(base + ["--fold", "-1", "x=1"])) == ([-1], ["x=1"])


@pytest.mark.parametrize("argv, message", [
    (["infer", "--data", ".", "--ensemble", "no_such.json"], "--ensemble: no_such.json is not an ensemble file"),
    (["bundle", "--ensemble", "no_such.json", "--out", "bundle"], "--ensemble: no_such.json is not an ensemble file"),
    (["score", "--solution", "a.csv", "--submission", "b.csv", "--fit", "e.json"], "--fit needs --oof"),
])
def test_ensemble_file_mistakes_get_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    from volslice.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["config", "train.epochs=abc"], "'abc' of type 'str' could not be converted to Integer full_key: train.epochs"),
    (["config", "trian.epochs=3"], "Key 'trian' not in 'Config'"),
    (["config", "--config", "no_such.yaml"], "No such file or directory"),
    (["cache", "--data", "no_such_folder", "--out", "cache"], "--data no_such_folder is not a folder"),
    (["cache", "--data", "empty", "--out", "cache"], "empty holds no series in the rsna2023 layout"),
    (["folds", "--data", "empty", "--out", "folds.csv", "competition=no_such"], "unknown competition 'no_such'"),
    (["train", "--data", "empty", "--cache", "cache", "--folds", "no_such.csv"], "no_such.csv"),
    (["infer", "--data", "empty", "--models", "no_such_run"], "no_such_run is not a trained run"),
])
def test_user_mistakes_end_in_one_line_and_leave_nothing(argv, message, capsys, tmp_path, monkeypatch):
    from volslice.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty" / "train_images").mkdir(parents=True)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"volslice {argv[0]}: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "cache").exists()  # a mistaken cache run writes no folder


def test_a_bug_keeps_its_traceback_and_debug_shows_a_mistakes(monkeypatch):
    from volslice.cli import config, main

    def broken(args):
        raise RuntimeError("a bug")

    with pytest.raises(Exception, match="trian"):
        main(["--debug", "config", "trian.epochs=3"])
    monkeypatch.setattr(config, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["config"])


def test_version_and_the_resolved_config(capsys):
    from importlib.metadata import version

    from volslice.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"volslice {version('volslice')}"
    assert main(["config", "--config", str(PROJECT_ROOT / "configs" / "demo.yaml"), "train.epochs=7"]) == 0
    printed = capsys.readouterr().out
    assert "  epochs: 7\n" in printed and "competition: rsna2023\n" in printed


def test_make_demo_refuses_real_data_and_pipeline_needs_data(tmp_path):
    """The demo's small config is for synthetic sets: a folder without test_solution.csv is refused
    with a pointer to make pipeline; make pipeline names a missing DATA."""
    real = tmp_path / "real"
    (real / "train_images").mkdir(parents=True)
    demo = subprocess.run(["make", "-C", str(PROJECT_ROOT), "demo", f"DATA={real}", f"WORK={tmp_path / 'work'}"],
                          capture_output=True, text=True)
    assert demo.returncode != 0 and "has no test_solution.csv" in demo.stdout and "make pipeline" in demo.stdout
    pipeline = subprocess.run(["make", "-C", str(PROJECT_ROOT), "pipeline", f"WORK={tmp_path / 'work'}"],
                              capture_output=True, text=True)
    assert pipeline.returncode != 0 and "give DATA=" in pipeline.stdout
    assert not (tmp_path / "work").exists()
