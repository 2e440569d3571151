"""The adjacent-slice descriptor method: the neighbour window sees only its neighbours, and both
stages run on the synthetic head CT, fold by fold, to a validated, scored submission."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from volslice import competitions
from volslice.config import load_config
from volslice.data.cache_runner import run_cache
from volslice.descriptors.data import DescriptorDataset, pad_series
from volslice.descriptors.models import NeighbourClassifier
from volslice.descriptors.run import run_descriptors

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


def test_two_stages_end_to_end(tiny_head_data, tmp_path):
    cfg = load_config("configs/rsna2019.yaml", overrides=[
        "cache.size=48", "cache.workers=1", "model.backbone=resnet10t", "model.init=scratch",
        f"descriptors.stage1.out_dir={tmp_path / 'run'}", "descriptors.stage1.crop=40", "descriptors.stage1.epochs=1",
        "descriptors.stage1.workers=0", "descriptors.stage1.channels_last=false", "descriptors.stage2.epochs=2",
        "descriptors.stage2.batch_size=2"])
    run_cache(tiny_head_data, tmp_path / "cache", cfg.cache, comp=competitions.get("rsna2019"), progress=False)
    summary = run_descriptors(cfg, tiny_head_data, tmp_path / "cache", report=tmp_path / "report.json",
                              submission=tmp_path / "submission.csv")
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("prior_baseline", "oof", "test", "submission", "stage1_oof", "stage1_test", "oof_prior"):
        assert np.isfinite(report[key]) if key != "submission" else report[key], key
    comp = competitions.get("rsna2019")
    submission = pd.read_csv(tmp_path / "submission.csv")
    comp.validate_submission(submission, comp.test_ids(tiny_head_data))
    assert comp.score(comp.read_solution(tiny_head_data), submission).score == pytest.approx(summary["test"])
    folds = pd.read_csv(tmp_path / "run" / "folds.csv")
    assert folds.groupby("patient_id").fold.nunique().max() == 1  # a patient's studies share a fold
    oof = pd.concat([pd.read_csv(p) for p in sorted((tmp_path / "run").glob("fold*/oof.csv"))])
    labels = comp.read_labels(tiny_head_data)
    assert sorted(oof.image_id) == sorted(labels.image_id)  # every training slice predicted once, out of fold
    for fold in (0, 1):
        assert (tmp_path / "run" / f"fold{fold}" / "stage1" / "config.yaml").exists()
        assert (tmp_path / "run" / f"fold{fold}" / "stage2" / "best.pt").exists()
