"""The predictor protocol: both predictors implement it, and a run is read by the predictor its
config's ``method`` names, whatever its folder holds."""

import inspect
from dataclasses import replace

import pytest

from volslice.classifier.predictor import Predictor
from volslice.config import Config
from volslice.descriptors.predictor import DescriptorPredictor
from volslice.predictors import PREDICTORS, RunPredictor, predictor_class
from volslice.runs import save_run_config


def protocol_members() -> set:
    return {name for name, _ in inspect.getmembers(RunPredictor) if not name.startswith("_")} | set(
        RunPredictor.__annotations__)


@pytest.mark.parametrize("implementation", [Predictor, DescriptorPredictor])
def test_both_predictors_implement_the_protocol(implementation):
    fields = set(getattr(implementation, "__dataclass_fields__", {}))
    missing = {name for name in protocol_members() if not hasattr(implementation, name) and name not in fields}
    assert not missing
    for name in ("load", "export", "series_rows", "patient_rows", "organ_record"):
        assert list(inspect.signature(getattr(implementation, name)).parameters)[:2] == \
            list(inspect.signature(getattr(RunPredictor, name)).parameters)[:2], name


def test_the_run_config_method_chooses_the_predictor(tmp_path):
    assert set(PREDICTORS.values()) == {Predictor, DescriptorPredictor}
    for method, implementation in PREDICTORS.items():
        save_run_config(tmp_path / method, replace(Config(), method=method))
        (tmp_path / method / "fold0").mkdir()  # folder contents say nothing
        assert predictor_class(tmp_path / method) is implementation
    save_run_config(tmp_path / "seg", replace(Config(), method="segmentation"))
    with pytest.raises(ValueError, match="'segmentation' run, which predicts no submission"):
        predictor_class(tmp_path / "seg")
    save_run_config(tmp_path / "old", Config())
    with pytest.raises(ValueError, match="records no method"):
        predictor_class(tmp_path / "old")
    with pytest.raises(FileNotFoundError, match="not a trained run"):
        predictor_class(tmp_path / "empty")


def test_a_fold_without_its_prior_is_refused_by_name_for_every_method(tmp_path):
    """Both predictors read a fold's prior through runs.read_prior: one behaviour, a one-line refusal."""
    from volslice.runs import mean_prior, save_prior

    save_prior(tmp_path / "fold0", {"a": 0.2, "b": 0.4})
    (tmp_path / "fold1").mkdir()
    assert mean_prior([tmp_path / "fold0"], ["a"]) == {"a": 0.2}
    with pytest.raises(FileNotFoundError, match="fold1 has no prior.json"):
        mean_prior([tmp_path / "fold0", tmp_path / "fold1"], ["a"])
    for implementation in (Predictor, DescriptorPredictor):
        assert "mean_prior" in inspect.getsource(implementation.load)
