"""The adjacent-slice descriptor method: the neighbour window sees only its neighbours, a study's
predictions do not depend on its batch, both stages run on the synthetic head CT, fold by fold, to
a validated, scored submission, and predicting the raw test folder (through ``volslice infer``'s
path, from the run or its Kaggle bundle) gives the run's own test rows."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from volslice.cli import main as cli
from volslice import competitions
from volslice.config import load_config
from volslice.data.manifest import load_manifest
from volslice.descriptors.data import DescriptorDataset, pad_series
from volslice.descriptors.models import NeighbourClassifier
from volslice.descriptors.predictor import STACKED_FOLDER, DescriptorPredictor, stacked_logits
from volslice.descriptors.run import mean_over_folds, run_descriptors
from volslice.inference import predict
from volslice.runs import model_weights

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")


def test_neighbour_window_sees_exactly_its_neighbours():
    torch.manual_seed(0)
    model = NeighbourClassifier(dim=8, labels=6, kind="window", window=2).eval()
    x = torch.randn(1, 12, 8)
    changed = x.clone()
    changed[0, 9] = torch.randn(8) * 3  # one slice's descriptor changes
    moved = (model(changed)["logits"] - model(x)["logits"]).abs().sum(-1)[0]
    assert torch.nonzero(moved > 1e-6).flatten().tolist() == [7, 8, 9, 10, 11]  # slices 7..11 see slice 9


def test_gru_sees_the_whole_study():
    torch.manual_seed(0)
    model = NeighbourClassifier(dim=8, labels=6, kind="gru", hidden=16).eval()
    x = torch.randn(1, 12, 8)
    changed = x.clone()
    changed[0, 11] = torch.randn(8) * 3
    assert ((model(changed)["logits"] - model(x)["logits"]).abs().sum(-1)[0] > 1e-6).all()


def test_padded_series_keep_their_slices(tmp_path):
    np.save(tmp_path / "1.npy", np.ones((3, 4), np.float16))
    np.save(tmp_path / "2.npy", np.full((5, 4), 2, np.float16))
    manifest = pd.DataFrame({"series_id": [1, 2], "image_ids": [["a", "b", "c"], list("defgh")]})
    labels = pd.DataFrame({"x": range(8)}, index=list("abcdefgh"))
    batch = pad_series([DescriptorDataset(tmp_path, manifest, ["x"], labels=labels)[i] for i in range(2)])
    assert batch["descriptors"].shape == (2, 5, 4) and batch["mask"].sum(1).tolist() == [3, 5]
    assert batch["target"][0, :, 0].tolist() == [0, 1, 2, 0, 0] and batch["descriptors"][0, 3:].abs().sum() == 0


@pytest.mark.parametrize("kind", ["window", "gru"])
def test_a_study_predicts_the_same_alone_or_padded_in_a_batch(kind):
    torch.manual_seed(0)
    model = NeighbourClassifier(dim=8, labels=6, kind=kind, window=2, hidden=16).eval()
    short, long = torch.randn(1, 5, 8), torch.randn(1, 9, 8)
    batch = pad_series([{"descriptors": short[0], "image_ids": list("abcde"), "series_id": 1},
                        {"descriptors": long[0], "image_ids": list("fghijklmn"), "series_id": 2}])
    padded = model(batch["descriptors"], batch["mask"])["logits"]
    torch.testing.assert_close(padded[0, :5], model(short)["logits"][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(padded[1], model(long)["logits"][0], atol=1e-6, rtol=0)


def _run(data, out, cache, *overrides):
    """Step 01 and the descriptor run through their commands (``volslice cache``, ``volslice
    descriptors``); (the run's config, its report)."""
    settings = ["cache.size=48", "cache.workers=1", "model.backbone=resnet10t", "model.init=scratch",
                f"descriptors.stage1.out_dir={out}", "descriptors.stage1.crop=40", "descriptors.stage1.epochs=1",
                "descriptors.stage1.workers=0", "descriptors.stage1.channels_last=false", "descriptors.stage2.epochs=2",
                "descriptors.stage2.batch_size=2", *overrides]
    config = ["--config", "configs/demo_rsna2019.yaml"]
    if not cache.exists():
        assert cli(["cache", "--data", str(data), "--out", str(cache), *config, *settings]) == 0
    assert cli(["descriptors", "--data", str(data), "--cache", str(cache), *config, "--report", str(out / "report.json"),
                "--submission", str(out / "submission.csv"), *settings]) == 0
    return load_config("configs/demo_rsna2019.yaml", overrides=settings), json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def head_cache(tiny_head_data, tmp_path_factory):
    return tmp_path_factory.mktemp("head_cache") / "cache"


@pytest.fixture(scope="module")
def descriptor_run(tiny_head_data, head_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("descriptor_run") / "run"
    return out, _run(tiny_head_data, out, head_cache)[1]


def test_two_stages_end_to_end(tiny_head_data, descriptor_run):
    run, summary = descriptor_run
    report = json.loads((run / "report.json").read_text())
    for key in ("prior_baseline", "oof", "test", "submission", "stage1_oof", "stage1_test", "oof_prior"):
        assert np.isfinite(report[key]) if key != "submission" else report[key], key
    comp = competitions.get("rsna2019")
    submission = pd.read_csv(run / "submission.csv")
    comp.validate_submission(submission, comp.test_ids(tiny_head_data))
    assert comp.score(comp.read_solution(tiny_head_data), submission).score == pytest.approx(summary["test"])
    folds = pd.read_csv(run / "folds.csv")
    assert folds.groupby("patient_id").fold.nunique().max() == 1  # a patient's studies share a fold
    oof = pd.concat([pd.read_csv(p) for p in sorted(run.glob("fold*/oof.csv"))])
    labels = comp.read_labels(tiny_head_data)
    assert sorted(oof.image_id) == sorted(labels.image_id)  # every training slice predicted once, out of fold
    for fold in (0, 1):
        assert (run / f"fold{fold}" / "stage1" / "config.yaml").exists()
        assert (run / f"fold{fold}" / "stage2" / "best.pt").exists()
        assert set(json.loads((run / f"fold{fold}" / "prior.json").read_text())) == set(comp.prediction_columns)
    results = json.loads((run / "results.json").read_text())
    assert results["scores"]["oof"] == pytest.approx(report["oof"]) and results["config"]["method"] == "descriptors"
    assert {"fold0/stage1", "fold0/stage2", "fold1/stage1", "fold1/stage2"} <= set(results["folds"])
    from PIL import Image

    with Image.open(run / "summary.png") as figure:
        assert figure.size == (1100, 400)  # each fold's curves beside the OOF precision-recall of the labels


def _run_test_rows(run) -> pd.DataFrame:
    comp = competitions.get("rsna2019")
    rows = mean_over_folds([pd.read_csv(p) for p in sorted(run.glob("fold*/test.csv"))], comp.prediction_columns)
    return comp.as_submission(rows).set_index("ID").Label


def test_inference_on_the_raw_test_folder_gives_the_runs_test_rows(tiny_head_data, descriptor_run, tmp_path):
    from volslice.predictors import export_run

    run, summary = descriptor_run
    result = predict(tiny_head_data, [run], device="cpu", progress=False)
    assert result.problems == [] and result.score == pytest.approx(summary["test"], abs=1e-5)
    expected = _run_test_rows(run)
    got = result.submission.set_index("ID").Label
    pd.testing.assert_series_equal(got.loc[expected.index], expected, atol=2e-5, rtol=0)
    bundled = export_run(run, tmp_path / "models")
    assert all((f / "model.safetensors").exists() for f in bundled)
    from_bundle = predict(tiny_head_data, [tmp_path / "models" / run.name], device="cpu", progress=False)
    pd.testing.assert_frame_equal(from_bundle.submission, result.submission, atol=1e-6, rtol=0)


def test_the_notebook_predicts_the_raw_test_folder_as_the_command(tiny_head_data, descriptor_run, tmp_path):
    import papermill

    from volslice.config import PROJECT_ROOT

    run, _ = descriptor_run
    out = tmp_path / "notebook.csv"
    papermill.execute_notebook(str(PROJECT_ROOT / "notebooks" / "inference.ipynb"), str(tmp_path / "run.ipynb"),
                               parameters=dict(DATA_ROOT=str(tiny_head_data), MODEL_DIRS=[str(run)], OUTPUT=str(out),
                                               DEVICE="cpu", REPORT=str(tmp_path / "report.json"), PROGRESS=False),
                               progress_bar=False)
    command = tmp_path / "command.csv"
    assert cli(["infer", "--data", str(tiny_head_data), "--models", str(run), "--out", str(command),
                "--device", "cpu"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(command), atol=1e-6, rtol=0)
    comp = competitions.get("rsna2019")
    comp.validate_submission(pd.read_csv(out), comp.test_ids(tiny_head_data))


def test_a_stage_trained_for_another_network_is_refused_by_name(descriptor_run, tmp_path):
    run = shutil.copytree(descriptor_run[0], tmp_path / "run")
    stage2 = run / "fold0" / "stage2"
    weights = model_weights(stage2 / "best.pt")
    old = {k: v for k, v in weights.items() if not k.startswith("project.")}  # the window before its projection
    old["mix.weight"] = torch.zeros(old["mix.weight"].shape[0], weights["project.weight"].shape[1],
                                    old["mix.weight"].shape[2])
    (stage2 / "best.pt").unlink()
    save_file(old, str(stage2 / "model.safetensors"))
    with pytest.raises(ValueError, match="fold0/stage2 does not fit this network.*descriptors --resume"):
        DescriptorPredictor.load(run, torch.device("cpu"))


def test_a_broken_test_series_gets_the_prior_and_is_named(tiny_head_data, descriptor_run, tmp_path):
    import shutil

    run, _ = descriptor_run
    data = tmp_path / "data"
    shutil.copytree(tiny_head_data, data)
    comp = competitions.get("rsna2019")
    victim = sorted((data / "stage_2_test").iterdir())[0]
    victim.write_bytes(b"not a DICOM")
    result = predict(data, [run], device="cpu", progress=False)
    comp.validate_submission(result.submission, comp.test_ids(data))
    assert any(victim.name in p["reason"] for p in result.problems)
    priors = [json.loads(p.read_text()) for p in sorted(run.glob("fold*/prior.json"))]
    row = result.submission.set_index("ID").Label
    assert row[f"{victim.stem}_any"] == pytest.approx(np.mean([p["any"] for p in priors]))
    assert "images predicted" in result.describe()


def test_stage2_on_out_of_fold_predictions(tiny_head_data, head_cache, descriptor_run, tmp_path):
    comp = competitions.get("rsna2019")
    cfg, summary = _run(tiny_head_data, tmp_path / "run", head_cache, "descriptors.stage2_input=oof_predictions")
    run = tmp_path / "run"
    stage1_oof = pd.concat([pd.read_csv(p) for p in sorted(run.glob("fold*/stage1_oof.csv"))]).set_index("image_id")
    folds = pd.read_csv(run / "folds.csv")
    series = int(folds.series_id.iloc[0])
    image_ids = load_manifest(head_cache).set_index("series_id").loc[series, "image_ids"]
    np.testing.assert_allclose(np.load(run / STACKED_FOLDER / f"{series}.npy"),
                               stacked_logits(stage1_oof.loc[image_ids, comp.prediction_columns]), atol=1e-5)
    assert np.isfinite(summary["oof"]) and np.isfinite(summary["test"])
    result = predict(tiny_head_data, [run], device="cpu", progress=False)
    expected = _run_test_rows(run)
    pd.testing.assert_series_equal(result.submission.set_index("ID").Label.loc[expected.index], expected,
                                   atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="every fold"):
        run_descriptors(cfg, tiny_head_data, head_cache, chosen=[0])


def test_real_head_ct_is_predicted_and_reported(descriptor_run, brain_atlas, tmp_path, capsys):
    from volslice.cli import main

    run, _ = descriptor_run
    report = tmp_path / "report.json"
    assert main(["real-heads", "--out", str(tmp_path / "real"), "--atlas", str(brain_atlas), "--models", str(run),
                 "--device", "cpu", "--report", str(report)]) == 0
    table = json.loads(report.read_text())["real_ct_predictions"]
    assert [r["slices"] for r in table] == [nib_slices(brain_atlas) // 5, 1]
    assert all(0 < r["max any"] < 1 and r["mean any"] <= r["max any"] for r in table)
    assert "CQ500" in capsys.readouterr().out
    predictions = pd.read_csv(tmp_path / "real" / "predictions.csv")
    comp = competitions.get("rsna2019")
    comp.validate_submission(predictions, comp.test_ids(tmp_path / "real"))


def nib_slices(path) -> int:
    import nibabel as nib

    return nib.load(str(path)).shape[2]


def test_folds_command_makes_the_runs_folds_for_slice_labels(tiny_head_data, head_cache, descriptor_run, tmp_path,
                                                             capsys):
    from volslice.cli import main

    run, _ = descriptor_run
    out = tmp_path / "folds.csv"
    assert main(["folds", "--data", str(tiny_head_data), "--out", str(out), "--config", "configs/demo_rsna2019.yaml"]) == 2
    assert "--cache" in capsys.readouterr().err  # slice labels say nothing about patients without the cache
    command = ["folds", "--data", str(tiny_head_data), "--out", str(out), "--config", "configs/demo_rsna2019.yaml",
               "--cache", str(head_cache)]
    assert main(command) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(run / "folds.csv"))
    assert main(command) == 0 and "up to date" in capsys.readouterr().out
