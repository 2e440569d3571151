"""`make demo` end to end, on a small config (slow: a minute or so)."""

import json
import subprocess

import pandas as pd
import pytest

from volslice.competitions import rsna2023 as comp
from volslice.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

SMALL = """
synthetic: {train_patients: 8, test_patients: 4, extra_unlabeled: 1, size: 64, slices_min: 16, slices_max: 24}
cache: {size: 32, n_slices: 12}
folds: {n_folds: 2}
model: {backbone: resnet10t, init: scratch, hidden: 8}
train: {n_slices: 4, crop: 24, epochs: 1, batch_size: 2, workers: 0, progress: false}
pretrain: {volume_depth: 8, volume_size: 48, slices_per_crop: 4, projection_dim: 64, workers: 1,
           train: {epochs: 1, batch_size: 2, workers: 0, progress: false}}
segmentation: {encoder: tu-resnet10t, decoder_channels: [16, 16, 8, 8, 8], crop: 32, slices_per_series: 2,
               train: {epochs: 1, batch_size: 4, workers: 0, progress: false},
               fusion: {slices_per_series: 2, block_min: 4, block_max: 8,
                        train: {epochs: 1, batch_size: 4, workers: 0, progress: false}}}
"""


def make(*args):
    return subprocess.run(["make", "-C", str(PROJECT_ROOT), *args], check=True, capture_output=True, text=True).stdout


def test_make_demo_generates_then_reuses_data(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    work, subs = tmp_path / "work", tmp_path / "subs"
    # resnet10t has no local ImageNet weights: the organ-crop run starts from scratch too
    out = make("demo", f"WORK={work}", f"CONFIG={config}", f"SUBMISSIONS={subs}",
               "ORGAN_START=model.init=scratch train.min_steps=0")
    report = json.loads((work / "report.json").read_text())
    solution = pd.read_csv(work / "data" / "test_solution.csv")
    assert report["prior_baseline"] == pytest.approx(comp.COMPETITION.score(solution, pd.read_csv(subs / "prior_baseline.csv")).score)
    assert report["test"] == pytest.approx(comp.COMPETITION.score(solution, pd.read_csv(subs / "ensemble.csv")).score)
    assert f"prior baseline score {report['prior_baseline']:.4f}" in out
    manifest = pd.read_csv(work / "cache" / "manifest.csv")
    assert len(manifest) == len(pd.read_csv(work / "data" / "train_series_meta.csv")) + len(
        pd.read_csv(work / "data" / "test_series_meta.csv"))
    assert set(pd.read_csv(work / "folds.csv").fold) == {0, 1}
    assert len(pd.read_csv(subs / "prior_baseline.csv")) == 4
    assert isinstance(report["oof"], float) and "OOF score" in out
    assert isinstance(report["test"], float) and report["submission"].endswith("ensemble.csv")
    assert len(pd.read_csv(subs / "ensemble.csv")) == 4
    assert (work / "runs" / "classifier" / "fold1" / "best.pt").exists()
    # fine-tuning started from the demo's own 2D-VoCo pretraining, every backbone tensor loaded
    assert (work / "runs" / "pretrain" / "backbone.safetensors").exists()
    assert f"initial weights: {work / 'runs' / 'pretrain' / 'backbone.safetensors'}" in out
    assert "0 missing, 0 unexpected" in out and "pretraining 2d VoCo" in out
    # the organ chain: Volume Fusion, the segmenter, step 03, the organ-crop run with its segmenter
    assert (work / "runs" / "volume_fusion" / "volume_fusion.safetensors").exists()
    assert set(report["segmentation_dice"]) == {"liver", "spleen", "left_kidney", "right_kidney", "bowel"}
    assert len(list((work / "cache" / "organs").glob("*.json"))) == len(manifest)
    assert (work / "runs" / "organs" / "segmenter" / "fold0" / "model.safetensors").exists()
    assert report["test_groups"] == pytest.approx(comp.COMPETITION.score(solution, pd.read_csv(subs / "ensemble.csv")).group_losses)
    assert "OOF score of 2 runs blended" in out

    # the same pipeline on an existing data root: nothing is generated, outputs go to the new WORK
    other = tmp_path / "other"
    out = make("demo", f"DATA={work / 'data'}", f"WORK={other}", f"CONFIG={config}", f"SUBMISSIONS={subs}",
               "ORGAN_START=model.init=scratch train.min_steps=0")
    assert "00_make_synthetic" not in out and not (other / "data").exists()
    assert json.loads((other / "report.json").read_text())["prior_baseline"] == pytest.approx(report["prior_baseline"])
