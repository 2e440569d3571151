import json
import math

import pandas as pd
import pytest
import torch

from volslice.competitions import rsna2023 as comp
from volslice.config import ModelConfig, TrainConfig
from volslice.models.build import build_classifier
from volslice.classifier.task import ClassificationTask
from volslice.data.tensors import augment
from volslice.runs import load_checkpoint
from volslice.cli import main as cli

PRIOR = {col: 0.5 for col in comp.PREDICTION_COLUMNS}


def train_main(argv):
    return cli(["train", *argv])


def test_losses_use_the_metric_weights():
    task = ClassificationTask(comp.COMPETITION, ["extravasation", "liver"], TrainConfig(), PRIOR)
    outputs = {"extravasation": torch.zeros(2, 1), "liver": torch.zeros(2, 3)}
    batch = {"target_extravasation": torch.tensor([0.0, 1.0]), "target_liver": torch.tensor([0, 2])}
    losses = task.losses(outputs, batch, "cpu")
    assert float(losses["extravasation"]) == pytest.approx(math.log(2))  # (1*l + 6*l) / 7
    assert float(losses["liver"]) == pytest.approx(math.log(3))
    outputs["extravasation"] = torch.tensor([[0.0], [2.0]])
    expected = (1 * math.log(2) + 6 * -math.log(1 / (1 + math.exp(-2)))) / 7
    assert float(task.losses(outputs, batch, "cpu")["extravasation"]) == pytest.approx(expected)


def test_aggregate_series_per_patient():
    prior = {**PRIOR, "liver_low": 0.125}
    task = ClassificationTask(comp.COMPETITION, ["bowel"], TrainConfig(series_aggregation="max"), prior)
    series = pd.DataFrame({"patient_id": [1, 1, 2], "series_id": [10, 11, 20], "bowel_healthy": [0.9, 0.6, 0.5],
                           "bowel_injury": [0.1, 0.4, 0.5]})
    sub = task.aggregate(series)
    assert list(sub.columns) == comp.SUBMISSION_COLUMNS
    assert sub.set_index("patient_id").loc[1, "bowel_injury"] == 0.4
    assert sub.set_index("patient_id").loc[1, "liver_low"] == 0.125  # absent head: the training prior
    task.cfg.series_aggregation = "mean"
    assert task.aggregate(series).set_index("patient_id").loc[1, "bowel_injury"] == pytest.approx(0.25)


def test_series_aggregation_is_checked():
    with pytest.raises(ValueError, match="series_aggregation"):
        ClassificationTask(comp.COMPETITION, ["bowel"], TrainConfig(series_aggregation="median"), PRIOR)


def test_tta_averages_the_image_and_its_flip():
    class Lopsided(torch.nn.Module):  # injury logit = mean of the left half of the image
        def forward(self, x):
            return {"bowel": x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3, 4))[:, None]}

    x = torch.zeros(1, 2, 1, 4, 4)
    x[..., :2] = 3.0
    with_tta = ClassificationTask(comp.COMPETITION, ["bowel"], TrainConfig(tta=True), PRIOR).ensemble_probabilities([Lopsided()], x)
    plain = ClassificationTask(comp.COMPETITION, ["bowel"], TrainConfig(tta=False), PRIOR).ensemble_probabilities([Lopsided()], x)
    assert float(plain["bowel"][0, 1]) == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert float(with_tta["bowel"][0, 1]) == pytest.approx((torch.sigmoid(torch.tensor(3.0)).item() + 0.5) / 2)


def test_augment_keeps_shape_and_identity_without_randomness():
    x = torch.randn(2, 3, 1, 16, 16)
    y = augment(x, TrainConfig(flip=False, rotate_degrees=0.0, intensity=0.0))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    assert augment(x, TrainConfig()).shape == x.shape


def test_init_choices_are_checked():
    with pytest.raises(ValueError, match="no packaged ImageNet weights"):
        build_classifier(ModelConfig(backbone="resnet10t", init="imagenet"), 1, comp.COMPETITION)
    with pytest.raises(ValueError, match="model.weights"):
        build_classifier(ModelConfig(backbone="resnet10t", init="file"), 1, comp.COMPETITION)
    with pytest.raises(ValueError, match="model.heads"):
        build_classifier(ModelConfig(backbone="resnet10t", init="scratch", heads=["lungs"]), 1, comp.COMPETITION)


def test_imagenet_start_never_reads_the_configs_backbone_file(tmp_path):
    """configs/demo.yaml names its 2D-VoCo export in model.weights; model.init=imagenet on it (the
    Makefile's FINETUNE=model.init=imagenet) starts from ImageNet's weights, not from that file."""
    other = tmp_path / "backbone.pt"
    scratch, _ = build_classifier(ModelConfig(init="scratch"), 3, comp.COMPETITION)
    torch.save(scratch.backbone.state_dict(), other)
    imagenet, _ = build_classifier(ModelConfig(init="imagenet"), 3, comp.COMPETITION)
    switched, report = build_classifier(ModelConfig(init="imagenet", weights=str(other)), 3, comp.COMPETITION)
    from_file, _ = build_classifier(ModelConfig(init="file", weights=str(other)), 3, comp.COMPETITION)
    stem = "conv_stem.weight"
    assert str(other) not in report.source
    torch.testing.assert_close(switched.backbone.state_dict()[stem], imagenet.backbone.state_dict()[stem])
    torch.testing.assert_close(from_file.backbone.state_dict()[stem], scratch.backbone.state_dict()[stem])
    assert not torch.allclose(imagenet.backbone.state_dict()[stem], scratch.backbone.state_dict()[stem])


@pytest.fixture(scope="module")
def prepared(tiny_cache):
    return tiny_cache(32, 8)


SMALL = ["model.backbone=resnet10t", "model.init=scratch", "model.hidden=8", "model.slice_loss_weight=0.5",
         "train.n_slices=4", "train.crop=24", "train.batch_size=2", "train.epochs=1", "train.workers=0",
         "train.progress=false", "train.lr=0.001"]


def test_train_all_folds_writes_oof_and_report(tiny_data, prepared, tmp_path, capsys):
    out, report = tmp_path / "run", tmp_path / "report.json"
    args = ["--data", str(tiny_data), "--cache", str(prepared / "cache"), "--folds", str(prepared / "folds.csv"),
            "--report", str(report), *SMALL, f"train.out_dir={out}"]
    assert train_main(args) == 0
    oof = pd.read_csv(out / "oof.csv")
    assert sorted(oof.patient_id) == sorted(pd.read_csv(tiny_data / "train.csv").patient_id)
    comp.COMPETITION.validate_submission(oof, oof.patient_id)
    result = json.loads(report.read_text())
    labels = pd.read_csv(tiny_data / "train.csv")
    assert result["oof"] == pytest.approx(comp.COMPETITION.score(labels, oof).score)
    prior = comp.COMPETITION.constant_submission(oof.patient_id, comp.COMPETITION.prior_probabilities(labels))
    assert result["oof_prior"] == pytest.approx(comp.COMPETITION.score(labels, prior).score)
    assert set(result["oof_extra"]["average_precision"]) <= set(comp.PREDICTION_COLUMNS) and "mAP" in result["oof_extra"]
    assert "OOF score" in capsys.readouterr().out
    for fold in (0, 1):
        state = load_checkpoint(out / f"fold{fold}" / "best.pt")
        assert "model:" in state["config"] and (out / f"fold{fold}" / "summary.csv").exists()
    # the run's results.json: its scores, each fold's best epoch and time, provenance and config
    results = json.loads((out / "results.json").read_text())
    assert results["scores"]["oof"] == pytest.approx(result["oof"])
    for fold in (0, 1):
        summary = pd.read_csv(out / f"fold{fold}" / "summary.csv")
        entry = results["folds"][f"fold{fold}"]
        assert entry["best_val_score"] == pytest.approx(summary.val_score.min())
        assert entry["best_epoch"] == int(summary.epoch[summary.val_score.idxmin()])
        assert entry["seconds"] == pytest.approx(summary.seconds.sum())
    from importlib.metadata import version

    assert results["packages"]["torch"] == version("torch")
    assert results["config"]["method"] == "classifier"
    assert results["config"]["model"]["heads"] == list(comp.GROUP_NAMES)  # none named: every head, spelt out
    assert results["written_at"] and "commit" in results
    # and its summary figure: every fold's validation curve, the OOF precision-recall of each label
    from PIL import Image

    with Image.open(out / "summary.png") as figure:
        assert figure.size == (1100, 400)  # two panels: the curves and the precision-recall
    # --resume on a finished fold does no more epochs
    assert train_main(args + ["--fold", "0", "--resume"]) == 0
    assert len(pd.read_csv(out / "fold0" / "summary.csv")) == 1
    # and without --resume the trained folder is refused in one line, untouched
    assert cli(["train", *args]) == 2
    assert len(pd.read_csv(out / "fold0" / "summary.csv")) == 1


def test_fold_minus_one_and_pretrained_file(tiny_data, prepared, tmp_path):
    out = tmp_path / "all"
    args = ["--data", str(tiny_data), "--cache", str(prepared / "cache"), "--folds", str(prepared / "folds.csv"),
            "--fold", "-1", *SMALL, f"train.out_dir={out}"]
    assert train_main(args) == 0
    assert (out / "fold-1" / "best.pt").exists() and not (out / "oof.csv").exists()
    # a checkpoint's backbone initialises the next model (as a pretraining checkpoint would)
    model, report = build_classifier(ModelConfig(backbone="resnet10t", init="file", hidden=8,
                                                 weights=str(out / "fold-1" / "best.pt"), weights_prefix="backbone."),
                                     1, comp.COMPETITION)
    assert report.missing == [] and report.loaded > 10
    state = load_checkpoint(out / "fold-1" / "best.pt")["model"]
    torch.testing.assert_close(model.backbone.conv1[0].weight, state["backbone.conv1.0.weight"])


def test_augment_moves_masks_with_the_image_but_keeps_their_values():
    from volslice.classifier.task import mask_loss

    x = torch.zeros(2, 3, 1, 16, 16)
    x[..., 2:6, 3:9] = 1.0
    masks = (x > 0).float().repeat(1, 1, 2, 1, 1)  # two mask channels, both the bright square
    y, moved = augment(x, TrainConfig(flip=True, rotate_degrees=0.0, intensity=0.5), masks)
    assert moved.shape == masks.shape and set(moved.unique().tolist()) <= {0.0, 1.0}  # no contrast change
    bright = y > y.mean(dim=(-1, -2), keepdim=True)
    assert torch.equal(bright.expand_as(moved), moved > 0.5)  # a flipped image, a flipped mask
    logits = torch.full((2 * 3, 2, 4, 4), -20.0)
    has = torch.tensor([1.0, 0.0])
    assert mask_loss(logits, torch.zeros_like(masks), has) < 1e-6
    assert mask_loss(logits, masks, has) > mask_loss(logits, masks, torch.zeros(2)) == 0


def test_mask_loss_run_trains_the_mask_head(tiny_data, prepared, tmp_path):
    out = tmp_path / "masks"
    args = ["--data", str(tiny_data), "--cache", str(prepared / "cache"), "--folds", str(prepared / "folds.csv"),
            "--fold", "0", *SMALL, "model.mask_loss_weight=1.0", "train.epochs=2", f"train.out_dir={out}"]
    assert train_main(args) == 0
    summary = pd.read_csv(out / "fold0" / "summary.csv")
    assert summary.loss_masks.iloc[-1] < summary.loss_masks.iloc[0]
    assert "mask_head.weight" in load_checkpoint(out / "fold0" / "best.pt")["model"]
    assert (out / "fold0" / "oof.csv").exists()
