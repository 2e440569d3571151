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
