"""The package's layers (pyproject.toml's import-linter contract): no module imports from a layer
above its own."""

from importlinter.cli import lint_imports

from volslice.config import PROJECT_ROOT


def test_no_import_runs_upward():
    assert lint_imports(config_filename=str(PROJECT_ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0
