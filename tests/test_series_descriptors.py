"""The descriptor method on patient labels (RSNA 2023): stage 1 is a trained classifier's fold CNN,
whose descriptors are the very features the CNN-LSTM computes; stage 2 pools only a series' real
slices (organ crops: each head the maximum of its own sequences); a run on the classifier's folds
is scored beside the classifier itself. The organ-crop run's descriptors are checked with the
organ-crop run itself (tests/segmentation/test_organs.py)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from volslice import competitions
from volslice.classifier.predictor import Predictor
from volslice.cli import main as cli
from volslice.config import PROJECT_ROOT, load_config
from volslice.data.inputs import sample_input
from volslice.data.manifest import load_images, load_manifest
from volslice.data.tensors import to_float
from volslice.descriptors.models import NeighbourClassifier
from volslice.series_descriptors import run_series_descriptors
from volslice.models.sequence import HeadSpec

SMALL = ["model.backbone=resnet10t", "model.init=scratch", "model.hidden=8", "train.n_slices=4", "train.crop=24",
         "train.batch_size=2", "train.epochs=1", "train.workers=0", "train.progress=false", "model.context=1"]
STAGE2 = ["descriptors.stage2.epochs=2", "descriptors.stage2.batch_size=4", "descriptors.stage2.progress=false",
          "descriptors.hidden=16"]


@pytest.fixture(scope="module")
def classifier(tiny_data, tiny_cache, tmp_path_factory):
    prepared, run = tiny_cache(32, 8), tmp_path_factory.mktemp("series_descriptors") / "classifier"
    assert cli(["train", "--data", str(tiny_data), "--cache", str(prepared / "cache"), "--folds",
                str(prepared / "folds.csv"), *SMALL, f"train.out_dir={run}"]) == 0
    return run, prepared / "cache"


@pytest.fixture(scope="module")
def series_run(tiny_data, classifier, tmp_path_factory):
    run, cache = classifier
    out = tmp_path_factory.mktemp("series_descriptors_run")
    assert cli(["descriptors", "--data", str(tiny_data), "--cache", str(cache), "--classifier", str(run),
                "--report", str(out / "report.json"), "--submission", str(out / "submission.csv"), *STAGE2,
                f"descriptors.stage1.out_dir={out / 'run'}"]) == 0
    return out


@pytest.mark.parametrize("kind", ["window", "gru"])
def test_patient_heads_pool_only_the_real_slices(kind):
    torch.manual_seed(0)
    model = NeighbourClassifier(dim=8, kind=kind, window=1, hidden=6,
                                heads=(HeadSpec("bowel", 1), HeadSpec("liver", 3))).eval()
    alone = torch.randn(1, 5, 8)
    padded = torch.cat([alone, 100 * torch.ones(1, 4, 8)], dim=1)  # padding that would win a max
    mask = torch.tensor([[True] * 5 + [False] * 4])
    for name, logits in model(alone).items():
        assert logits.shape == (1, 1 if name == "bowel" else 3)
        assert torch.allclose(model(padded, mask)[name], logits, atol=1e-5)


@pytest.mark.parametrize("kind", ["window", "gru"])
def test_organ_crop_heads_read_the_maximum_of_their_own_sequences(kind):
    """Two kidney sequences and a liver one: padding never changes a head, the kidney head reads
    its two sequences alike (either kidney's injury), and the liver head never reads them."""
    torch.manual_seed(0)
    model = NeighbourClassifier(dim=8, kind=kind, window=1, hidden=6, heads=(HeadSpec("kidney", 3), HeadSpec("liver", 3)),
                                views=(2, 1)).eval()
    left, right, liver = torch.randn(1, 5, 8), torch.randn(1, 3, 8), torch.randn(1, 4, 8)

    def pad(x):  # to 6 slices, with padding that would win a max
        return torch.cat([x, 100 * torch.ones(1, 6 - x.shape[1], 8)], dim=1)

    mask = torch.tensor([[[True] * n + [False] * (6 - n) for n in (5, 3, 4)]])
    out = model(torch.stack([pad(left), pad(right), pad(liver)], dim=1), mask)
    swapped = model(torch.stack([pad(right), pad(left), pad(liver)], dim=1), mask[:, [1, 0, 2]])
    assert out["kidney"].shape == (1, 3) and torch.allclose(out["kidney"], swapped["kidney"], atol=1e-5)
    assert torch.allclose(out["liver"], model(liver)["liver"], atol=1e-5)
    either = torch.maximum(model._pooled(left, None), model._pooled(right, None))
    assert torch.allclose(out["kidney"], model.heads["kidney"](either), atol=1e-5)
    with pytest.raises(ValueError, match="2 descriptor sequences a series for heads that read 3"):
        model(torch.randn(1, 2, 4, 8))


def test_the_descriptors_are_the_classifiers_own_slice_features(classifier, series_run):
    """Stage 1 is the classifier's CNN: the cached descriptor of every slice the CNN-LSTM samples
    equals the features it computes for that slice."""
    run, cache = classifier
    predictor = Predictor.load(run / "fold0", torch.device("cpu"))
    manifest = load_manifest(cache)
    checked = 0
    for _, row in manifest.head(4).iterrows():
        images = load_images(cache, row)
        slices, picks = sample_input(images, predictor.spec, train=False)
        features, _ = predictor.models[0].slice_features(to_float(torch.from_numpy(slices)[None], 'cpu'))
        cached = np.load(series_run / "run" / "fold0" / "descriptors" / f"{int(row.series_id)}.npy")
        assert cached.shape == (images.shape[0], predictor.models[0].backbone.num_features)  # every slice
        np.testing.assert_allclose(cached[picks].astype(np.float32), features[0].detach().numpy(), rtol=2e-3, atol=2e-3)
        checked += 1
    assert checked == 4


def test_stage2_on_the_classifiers_folds_is_scored_beside_it(tiny_data, classifier, series_run):
    run, _ = classifier
    comp = competitions.get("rsna2023")
    report = json.loads((series_run / "report.json").read_text())
    for key in ("oof", "classifier_oof", "oof_best_constant", "test", "classifier_test", "best_constant"):
        assert np.isfinite(report[key]), key
    # the classifier's OOF figure is its own oof.csv's score, on the same patients as stage 2's
    oof = pd.read_csv(series_run / "run" / "oof.csv")
    own = pd.read_csv(run / "oof.csv")
    assert set(oof.patient_id) == set(own.patient_id)
    labels = comp.read_labels(tiny_data)
    assert report["classifier_oof"] == pytest.approx(comp.score(labels[labels.patient_id.isin(own.patient_id)], own).score)
    submission = pd.read_csv(series_run / "submission.csv")
    comp.validate_submission(submission, comp.test_ids(tiny_data))
    assert report["test"] == pytest.approx(comp.score(comp.read_solution(tiny_data), submission).score)
    results = json.loads((series_run / "run" / "results.json").read_text())
    assert results["config"]["method"] == "series_descriptors" and "fold1/stage2" in results["folds"]
    assert (series_run / "run" / "summary.png").exists()


def test_a_rerun_trains_nothing_again(tiny_data, classifier, series_run):
    run, cache = classifier
    before = {p: p.stat().st_mtime_ns for p in (series_run / "run").glob("fold*/descriptors/*.npy")}
    cfg = load_config(run / "config.yaml", overrides=[*STAGE2, f"descriptors.stage1.out_dir={series_run / 'run'}"])
    again = run_series_descriptors(cfg, run, tiny_data, cache, resume=True)
    after = {p: p.stat().st_mtime_ns for p in (series_run / "run").glob("fold*/descriptors/*.npy")}
    assert before == after and len(before) > 0
    assert again["oof"] == pytest.approx(json.loads((series_run / "report.json").read_text())["oof"])


def test_slice_labels_and_missing_runs_are_refused_by_name(tiny_data, classifier, tmp_path):
    run, cache = classifier
    heads = load_config(PROJECT_ROOT / "configs/demo_rsna2019.yaml", overrides=[f"descriptors.stage1.out_dir={tmp_path}"])
    with pytest.raises(ValueError, match="labels slices"):
        run_series_descriptors(heads, run, tiny_data, cache)
    assert cli(["descriptors", "--data", str(tiny_data), "--cache", str(cache), "--classifier",
                str(tmp_path / "nothing")]) != 0
