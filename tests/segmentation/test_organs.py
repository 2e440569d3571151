"""Step 03 (organ records) and an organ-crop classifier through the one prediction path."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from volslice.predictors import export_run
from volslice.cli import main as cli
from volslice.competitions import rsna2023 as comp
from volslice.data.cache import cache_series
from volslice.data.manifest import load_images, load_manifest
from volslice.data.dataset import SeriesDataset
from volslice.dicom import read_series
from volslice.classifier.predictor import Predictor
from volslice.segmentation.organs import load_organ_records, organ_record, predict_organs

SEGMENTER = ["segmentation.encoder=tu-resnet10t", "segmentation.decoder_channels=[32,16,16,8,8]",
             "segmentation.crop=64", "segmentation.slices_per_series=6", "segmentation.train.epochs=3",
             "segmentation.train.batch_size=8", "segmentation.train.workers=0", "segmentation.train.progress=false",
             "segmentation.train.lr=0.003"]
CROPS = ["model.backbone=resnet10t", "model.init=scratch", "model.hidden=8", "train.n_slices=4", "train.crop=24",
         "train.batch_size=2", "train.epochs=1", "train.workers=0", "train.progress=false", "model.context=1",
         "model.input=organs", "model.heads=[kidney,liver,spleen]", "train.series_aggregation=max", "train.tta=true"]


@pytest.fixture(scope="module")
def organ_run(tiny_data, tiny_cache):
    root = tiny_cache(64, 16)  # its cache gains the organ records of step 03
    assert cli(["segment", "--cache", str(root / "cache"), "--folds", str(root / "folds.csv"), "--fold", "0",
                *SEGMENTER, f"segmentation.train.out_dir={root / 'seg'}"]) == 0
    assert cli(["organs", "--cache", str(root / "cache"), "--segmenter", str(root / "seg"), "--device", "cpu",
                "--no-progress"]) == 0
    assert cli(["train", "--data", str(tiny_data), "--cache", str(root / "cache"), "--folds", str(root / "folds.csv"),
                *CROPS, f"train.out_dir={root / 'crops'}"]) == 0
    assert cli(["train", "--data", str(tiny_data), "--cache", str(root / "cache"), "--folds", str(root / "folds.csv"),
                *CROPS, "model.input=slices", "model.slice_range=organs", "model.heads=[bowel,extravasation]",
                "model.slice_loss_weight=0.5", f"train.out_dir={root / 'whole'}"]) == 0
    return root


def test_step_03_records_every_series_keeps_the_masks_and_reruns_do_nothing(organ_run, capsys):
    cache, organs = organ_run / "cache", organ_run / "cache" / "organs"
    manifest = load_manifest(cache)
    assert sorted(int(p.stem) for p in organs.glob("*.json")) == sorted(manifest.series_id)
    masked = manifest[manifest.mask_path.notna()].iloc[0]
    entry = json.loads((organs / f"{masked.series_id}.json").read_text())
    truth = organ_record(np.load(cache / masked.mask_path), masked.z_mm, masked.pixel_spacing_mm)
    assert entry["mask"] == truth and truth["boxes"]["liver"] is not None
    assert load_organ_records(organs, ground_truth=True)[masked.series_id] == truth
    assert load_organ_records(organs, ground_truth=False)[masked.series_id] == entry["predicted"]
    assert len(pd.read_csv(organs / "organs.csv")) == len(manifest) + manifest.mask_path.notna().sum()
    capsys.readouterr()
    assert cli(["organs", "--cache", str(cache), "--segmenter", str(organ_run / "seg"), "--no-progress"]) == 0
    assert f"organs of 0 series predicted, {len(manifest)} already done" in capsys.readouterr().out


def test_another_segmenter_is_refused_unless_forced(organ_run, tmp_path):
    other = tmp_path / "seg_copy"
    shutil.copytree(organ_run / "seg", other)
    out = tmp_path / "organs"
    shutil.copytree(organ_run / "cache" / "organs", out)
    with pytest.raises(ValueError, match="another segmenter.*--force"):
        predict_organs(organ_run / "cache", other, out, progress=False)
    assert predict_organs(organ_run / "cache", other, out, force=True, progress=False)["predicted"] == \
        len(load_manifest(organ_run / "cache"))


def test_inference_finds_the_organs_and_crops_as_training_validation_did(tiny_data, organ_run):
    """The run's own segmenter, on a series read from raw DICOM with the run's cache settings,
    gives step 03's predicted record, and the Predictor's input is the validation item."""
    predictor = Predictor.load(organ_run / "crops" / "fold0", torch.device("cpu"))
    assert predictor.segmenter is not None
    cache = organ_run / "cache"
    rows = load_manifest(cache)
    rows = rows[rows.split == "train"].reset_index(drop=True)
    predicted = load_organ_records(cache / "organs", ground_truth=False)
    heads = {h: comp.GROUPS[h] for h in predictor.cfg.model.heads}
    dataset = SeriesDataset(cache, rows, heads, spec=predictor.spec, organs=predicted, train=False)
    found = 0
    for index in range(3):
        row = rows.iloc[index]
        folder = tiny_data / "train_images" / str(row.patient_id) / str(row.series_id)
        images, _, _ = cache_series(read_series(folder), predictor.cfg.cache)
        np.testing.assert_array_equal(images, load_images(cache, row))
        record = predictor.organ_record(images)
        assert record["boxes"] == predicted[row.series_id]["boxes"]
        found += sum(box is not None for box in record["boxes"].values())
        _, crops = predictor.model_input(images)
        assert crops.shape == (4, 4, 3, 24, 24)  # views (two kidneys, liver, spleen), slices, 2.5D channels, crop
        np.testing.assert_array_equal(crops, dataset[index]["image"].numpy())
    assert found > 0  # the segmenter finds organs, so the crops are not whole slices


def test_inference_reproduces_the_oof_rows_of_an_organ_crop_run(tiny_data, organ_run, tmp_path):
    out = tmp_path / "train_split.csv"
    assert cli(["infer", "--data", str(tiny_data), "--models", str(organ_run / "crops" / "fold0"), "--split", "train",
                "--out", str(out), "--device", "cpu"]) == 0
    oof = pd.read_csv(organ_run / "crops" / "fold0" / "oof.csv").set_index("patient_id")
    inferred = pd.read_csv(out).set_index("patient_id").loc[oof.index]
    pd.testing.assert_frame_equal(inferred, oof, atol=1e-6, rtol=0)


def test_descriptors_from_an_organ_crop_run_are_its_own_crop_features(tiny_data, organ_run, tmp_path):
    """Stage 1 of the descriptor method on an organ-crop run: every slice of each organ's z range,
    cut to its box; the descriptors of the slices the classifier samples are the features it
    computes for its crops, and stage 2 is scored beside the run."""
    from volslice.data.inputs import organs_z_range, organ_views, sample_input, select_slices
    from volslice.data.tensors import to_float

    out = tmp_path / "descriptors"
    assert cli(["descriptors", "--data", str(tiny_data), "--cache", str(organ_run / "cache"), "--classifier",
                str(organ_run / "crops"), "--organs", str(organ_run / "cache" / "organs"),
                "--report", str(tmp_path / "report.json"), "descriptors.stage2.epochs=2",
                "descriptors.stage2.batch_size=4", "descriptors.stage2.progress=false", "descriptors.hidden=16",
                f"descriptors.stage1.out_dir={out}"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert np.isfinite(report["oof"]) and np.isfinite(report["classifier_oof"]) and np.isfinite(report["test"])
    predictor = Predictor.load(organ_run / "crops" / "fold0", torch.device("cpu"))
    cache = organ_run / "cache"
    tests = load_manifest(cache).query("split == 'test'")
    predicted = load_organ_records(cache / "organs", ground_truth=False)
    for _, row in tests.head(2).iterrows():
        images, record = load_images(cache, row), predicted[row.series_id]
        crops, _ = sample_input(images, predictor.spec, train=False, record=record)
        for view, (_, part) in enumerate(organ_views(predictor.spec.heads)):
            cached = np.load(out / "fold0" / "descriptors" / f"{row.series_id}_{part}.npy").astype(np.float32)
            low, high = organs_z_range(record, (part,), predictor.spec.organ_margin, images.shape[0]) or (0, len(images))
            assert len(cached) == high - low  # every slice of the organ's z range
            picks = select_slices(high - low, predictor.spec.n_slices, jitter=False)
            features, _ = predictor.models[0].slice_features(to_float(torch.from_numpy(crops[view])[None], "cpu"))
            np.testing.assert_allclose(cached[picks], features[0].detach().numpy(), rtol=2e-3, atol=2e-3)


def test_the_bundle_carries_the_segmenter(tiny_data, organ_run, tmp_path):
    export_run(organ_run / "crops", tmp_path / "models")
    exported = tmp_path / "models" / "crops"
    assert (exported / "segmenter" / "fold0" / "model.safetensors").exists()
    assert not list(exported.rglob("*.pt"))
    original = Predictor.load(organ_run / "crops", torch.device("cpu"))
    bundled = Predictor.load(exported, torch.device("cpu"))
    images = load_images(organ_run / "cache", load_manifest(organ_run / "cache").iloc[0])
    assert bundled.series_rows(images, 1, 2)[0] == pytest.approx(original.series_rows(images, 1, 2)[0])


def test_the_oof_of_blended_runs_takes_each_column_from_the_run_that_predicts_it(tiny_data, organ_run, tmp_path):
    report = tmp_path / "report.json"
    assert cli(["score", "--data", str(tiny_data), "--oof", str(organ_run / "crops"), str(organ_run / "whole"),
                "--report", str(report)]) == 0
    crops = pd.read_csv(organ_run / "crops" / "oof.csv").set_index("patient_id").sort_index()
    whole = pd.read_csv(organ_run / "whole" / "oof.csv").set_index("patient_id").sort_index()
    recorded = json.loads(report.read_text())
    blended = crops.copy()
    blended[["bowel_healthy", "bowel_injury", "extravasation_healthy", "extravasation_injury"]] = \
        whole[["bowel_healthy", "bowel_injury", "extravasation_healthy", "extravasation_injury"]]
    labels = pd.read_csv(tiny_data / "train.csv")
    expected = comp.COMPETITION.score(labels[labels.patient_id.isin(blended.index)], blended.reset_index())
    assert recorded["oof"] == pytest.approx(expected.score)
    assert not np.allclose(crops.bowel_injury, whole.bowel_injury)  # the two runs' fills differ from the predictions


def test_interpret_shows_where_in_each_organ_crop_the_model_looked(tiny_data, organ_run, tmp_path):
    from PIL import Image

    from volslice.interpretation import explain

    patient = int(pd.read_csv(tiny_data / "train.csv").patient_id.iloc[0])
    out = tmp_path / "crops.png"
    assert cli(["interpret", "--data", str(tiny_data), "--model", str(organ_run / "crops"), "--patient", str(patient),
                "--out", str(out)]) == 0
    with Image.open(out) as figure:
        assert figure.size[0] > figure.size[1] / 2 and np.asarray(figure.convert("L")).std() > 10
    maps = explain(tiny_data, organ_run / "crops", patient, out=tmp_path / "again.png")
    assert list(maps) == ["left_kidney", "right_kidney", "liver", "spleen"]
    for values in maps.values():
        assert values.shape == (4, 24, 24) and values.min() >= 0 and values.max() > 0
        # in-plane: some pixels of a crop matter more than others
        assert (values.reshape(4, -1).max(1) > 2 * values.reshape(4, -1).mean(1)).any()


class Threshold(torch.nn.Module):
    """A stand-in segmenter: class 1 (liver) where the centre channel is bright."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        bright = (x[:, x.shape[1] // 2] > 0).float()
        return torch.stack([1 - bright, bright, *[torch.zeros_like(bright)] * 4], dim=1) * 10


def test_predicting_every_kth_slice_fills_the_others_from_the_nearest():
    from volslice.config import load_config
    from volslice.segmentation.organs import Segmenter

    images = np.zeros((10, 1, 40, 40), np.uint8)
    images[4:7, :, 10:20, 10:30] = 255
    every = Segmenter(load_config(overrides=["segmentation.predict_every=1"]), [Threshold()])
    assert every.masks(images).shape == (10, 40, 40)
    assert every.record(images)["boxes"]["liver"] == [4, 7, 10, 20, 10, 30]
    third = Segmenter(load_config(overrides=["segmentation.predict_every=3"]), [Threshold()])
    # slices 0, 3, 6 and 9 are predicted; 5 and 7 take slice 6's labels, 4 takes slice 3's
    assert third.record(images)["presence"]["liver"] == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    np.testing.assert_array_equal(third.masks(images)[[0, 3, 6, 9]], every.masks(images)[[0, 3, 6, 9]])


def test_runs_with_the_same_segmenter_share_one_organ_prediction_per_series(tiny_data, organ_run, monkeypatch):
    from volslice.inference import predict
    from volslice.segmentation.organs import Segmenter

    crops = Predictor.load(organ_run / "crops", torch.device("cpu"))
    whole = Predictor.load(organ_run / "whole", torch.device("cpu"))
    assert crops.segmenter.identity == whole.segmenter.identity  # two exported copies of one segmenter
    calls = []
    original = Segmenter.masks
    monkeypatch.setattr(Segmenter, "masks", lambda self, images, **kw: calls.append(1) or original(self, images, **kw))
    both = predict(tiny_data, [organ_run / "crops", organ_run / "whole"], device="cpu", progress=False)
    series = len(pd.read_csv(tiny_data / "test_series_meta.csv"))
    assert len(calls) == series
    alone = predict(tiny_data, [organ_run / "crops"], device="cpu", progress=False)
    columns = [c for h in ("kidney", "liver", "spleen") for c in comp.GROUPS[h]]
    pd.testing.assert_frame_equal(both.submission[columns], alone.submission[columns], atol=1e-6, rtol=0)
