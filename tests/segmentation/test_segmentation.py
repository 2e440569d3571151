import numpy as np
import pandas as pd
import pytest
import torch

from volslice.cli import main as cli
from volslice.config import CacheConfig, VolumeFusionConfig, load_config
from volslice.data.manifest import load_manifest
from volslice.data.cache_runner import run_cache
from volslice.data.folds import make_folds
from volslice.segmentation.data import (
    MaskedSliceDataset, _block_edges, fuse, fusion_class_map, intensity_jitter, zoomed)
from volslice.segmentation.model import ORGAN_CLASSES, build_segmenter, load_matching
from volslice.segmentation.run import extra_fusion_sets
from volslice.segmentation.task import SegmentationTask, batch_dice_loss
from volslice.runs import load_checkpoint

SMALL = ["segmentation.encoder=tu-resnet10t", "segmentation.decoder_channels=[32,16,16,8,8]",
         "segmentation.crop=32", "segmentation.slices_per_series=2", "segmentation.train.epochs=1",
         "segmentation.train.batch_size=4", "segmentation.train.workers=0", "segmentation.train.progress=false",
         "segmentation.fusion.slices_per_series=2", "segmentation.fusion.train.epochs=1",
         "segmentation.fusion.train.batch_size=4", "segmentation.fusion.train.workers=0",
         "segmentation.fusion.train.progress=false", "segmentation.fusion.block_min=4",
         "segmentation.fusion.block_max=12"]


def test_fused_image_is_alpha_a_plus_one_minus_alpha_b_pixel_by_pixel():
    rng = np.random.default_rng(0)
    cfg = VolumeFusionConfig(classes=4)
    a, b = rng.random((3, 40, 48), dtype=np.float32), rng.random((3, 40, 48), dtype=np.float32)
    class_map = fusion_class_map((40, 48), cfg, rng)
    fused = fuse(a, b, class_map, cfg.classes)
    for y, x in [(0, 0), (5, 47), (39, 20), (17, 33)] + [tuple(p) for p in rng.integers(0, 40, (20, 2))]:
        alpha = class_map[y, x] / 4
        np.testing.assert_allclose(fused[:, y, x], alpha * a[:, y, x] + (1 - alpha) * b[:, y, x], rtol=1e-6)
    assert set(np.unique(class_map)) <= {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(fused[:, class_map == 4], a[:, class_map == 4])
    np.testing.assert_array_equal(fused[:, class_map == 0], b[:, class_map == 0])


@pytest.mark.parametrize("ratio", [0.7, 0.3])
def test_foreground_share_follows_the_configured_ratio(ratio):
    rng = np.random.default_rng(1)
    cfg = VolumeFusionConfig(foreground_ratio=ratio, classes=3, block_min=8, block_max=16)
    maps = np.stack([fusion_class_map((128, 128), cfg, rng) for _ in range(200)])
    assert (maps > 0).mean() == pytest.approx(ratio, abs=0.02)
    assert set(np.unique(maps)) == {0, 1, 2, 3}
    shares = [(maps == k).mean() for k in (1, 2, 3)]  # k uniform over 1..K
    assert max(shares) - min(shares) < 0.02


def test_block_sizes_and_k_are_config_keys():
    cfg = load_config(overrides=["segmentation.fusion.classes=2", "segmentation.fusion.block_min=5",
                                 "segmentation.fusion.block_max=7"]).segmentation.fusion
    assert (cfg.classes, cfg.block_min, cfg.block_max) == (2, 5, 7)
    rng = np.random.default_rng(2)
    sides = np.diff(_block_edges(1000, cfg.block_min, cfg.block_max, rng))
    assert sides[:-1].min() >= 5 and sides.max() <= 7 and sides.sum() == 1000
    assert fusion_class_map((64, 64), cfg, rng).max() <= 2


def test_dice_score_by_hand():
    task = SegmentationTask(["background", "liver", "spleen"])
    sums = {"predicted": np.array([90.0, 6.0, 4.0]), "true": np.array([88.0, 8.0, 4.0]),
            "both": np.array([86.0, 6.0, 2.0])}
    half = {k: v / 2 for k, v in sums.items()}
    metrics = task.score([half, half])  # two processes' sums add up
    assert metrics["dice_liver"] == pytest.approx(12 / 14) and metrics["dice_spleen"] == pytest.approx(0.5)
    assert metrics["score"] == pytest.approx(1 - (12 / 14 + 0.5) / 2)


def test_batch_dice_weighs_each_present_organ_alike_and_leaves_absent_ones_out():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, :4, :4] = 1  # a large organ on the first slice
    target[1, 0, 0] = 2  # one pixel of a small organ on the second
    perfect = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float() * 40
    assert batch_dice_loss(perfect, target) == pytest.approx(0, abs=1e-6)
    missed = perfect.clone()
    missed[1, 2, 0, 0], missed[1, 0, 0, 0] = 0, 40  # the small organ's pixel called background
    assert batch_dice_loss(missed, target) == pytest.approx(0.5, abs=1e-4)  # class 3 absent: left out
    assert batch_dice_loss(perfect, torch.zeros_like(target)) == 0  # no organ in the batch: no Dice term


@pytest.fixture(scope="module")
def prepared(tiny_cache):
    return tiny_cache(48, 8)


def test_masked_slices_carry_their_own_mask(prepared):
    manifest = load_manifest(prepared / "cache")
    ds = MaskedSliceDataset(prepared / "cache", manifest, context=1, crop=32, slices_per_series=4, train=False)
    item = ds[2]
    row = ds.rows.iloc[0]
    masks = np.load(prepared / "cache" / row.mask_path)
    images = np.load(prepared / "cache" / row.image_path)
    z = int(np.rint(np.linspace(0, len(masks) - 1, 4))[2])
    np.testing.assert_array_equal(item["mask"].numpy(), masks[z, 8:40, 8:40])
    np.testing.assert_array_equal(item["image"].numpy()[1], images[z, 0, 8:40, 8:40])
    assert item["image"].shape == (3, 32, 32) and item["mask"].max() > 0


@pytest.mark.parametrize("flip", [True, False])
def test_training_flips_only_when_asked_and_swap_the_kidneys_labels(prepared, flip):
    """Cache columns run towards the patient's left, so the left kidney lies right of the right
    kidney in every image; a mirrored training sample must say so too (its labels swap). Without
    ``flip`` (the segmentation default) every sample is the cached slice as it is."""
    manifest = load_manifest(prepared / "cache")
    ds = MaskedSliceDataset(prepared / "cache", manifest, context=0, crop=48, slices_per_series=8, train=True,
                            flip=flip)
    torch.manual_seed(0)
    left, right = ORGAN_CLASSES.index("left_kidney"), ORGAN_CLASSES.index("right_kidney")
    checked = mirrored = 0
    for index in range(len(ds)):
        item = ds[index]
        mask, image = item["mask"].numpy(), item["image"].numpy()[0]
        cached = np.load(prepared / "cache" / ds.rows.iloc[index // 8].image_path)[index % 8, 0]
        if not np.array_equal(image, cached):
            np.testing.assert_array_equal(image, cached[:, ::-1])
            mirrored += 1
        if (mask == left).any() and (mask == right).any():
            assert np.nonzero(mask == left)[1].mean() > np.nonzero(mask == right)[1].mean()
            checked += 1
        solid = (mask > 0) & (mask < ORGAN_CLASSES.index("bowel"))  # bowel holds air
        if solid.sum() > 20:
            assert image[solid].mean() > image[~solid].mean()  # the image moved with the mask
    assert checked >= 4
    assert (mirrored > len(ds) // 4) if flip else mirrored == 0


def test_zoom_scales_image_and_mask_together_and_moves_the_organ_pixel():
    stack = np.zeros((3, 40, 40), np.uint8)
    stack[:2, 10:20, 10:20] = 200
    stack[2, 10:20, 10:20] = 3
    big, around = zoomed(stack, 1.5, (15, 15))
    assert big.shape == (3, 60, 60) and around == (22, 22)
    assert big[2, around[0], around[1]] == 3 and (big[2] == 3).sum() == 15 * 15
    np.testing.assert_array_equal(big[0] > 100, big[2] == 3)  # every labelled pixel bright, no other
    small, _ = zoomed(stack, 0.5, None)
    assert small.shape == (3, 20, 20) and (small[2] == 3).sum() == 5 * 5
    padded, around = zoomed(stack, 0.5, (15, 15), at_least=32)  # never below the crop: air around it
    assert padded.shape == (3, 32, 32) and (padded[2] == 3).sum() == 5 * 5 and padded[2, around[0], around[1]] == 3


def test_intensity_jitter_is_monotonic_and_varies():
    torch.manual_seed(0)
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    outputs = [intensity_jitter(images, 0.25, 0.3) for _ in range(20)]
    for out in outputs:
        assert out.dtype == np.uint8 and np.all(np.diff(out.ravel().astype(int)) >= 0)  # order kept
    assert len({out.tobytes() for out in outputs}) == 20
    assert np.array_equal(intensity_jitter(images, 0.0, 0.0), images)


def test_augmented_training_samples_keep_organs_under_their_labels(prepared):
    manifest = load_manifest(prepared / "cache")
    ds = MaskedSliceDataset(prepared / "cache", manifest, context=0, crop=48, slices_per_series=8, train=True,
                            class_sampling=1.0, zoom=0.3, intensity=0.25, gamma=0.3)
    torch.manual_seed(1)
    sizes = set()
    for index in range(len(ds)):
        item = ds[index]
        mask, image = item["mask"].numpy(), item["image"].numpy()[0]
        solid = (mask > 0) & (mask < ORGAN_CLASSES.index("bowel"))
        if solid.sum() > 20:
            assert image[solid].mean() > image[~solid].mean()
        sizes.add(int(solid.sum()))
    assert len(sizes) > len(ds) // 2


def test_class_sampling_draws_crops_by_organ(prepared):
    """With class_sampling=1 every training crop shows an organ (the crop, a third of the slice's
    width, is placed to hold a pixel of it), each organ of a series about equally often: a small
    organ is seen more often than in random crops of slices spread over the series."""
    manifest = load_manifest(prepared / "cache")
    common = dict(context=0, crop=16, slices_per_series=8, train=True)
    shares = {}
    for sampling in (0.0, 1.0):
        ds = MaskedSliceDataset(prepared / "cache", manifest, class_sampling=sampling, **common)
        torch.manual_seed(0)
        masks = [ds[i]["mask"].numpy() for _ in range(6) for i in range(len(ds))]
        shown = np.array([[(mask == c).any() for c in range(len(ORGAN_CLASSES))] for mask in masks])
        shares[sampling] = shown.mean(0)
        if sampling:
            assert shown[:, 1:].any(axis=1).all()
    assert (shares[1.0][1:] > shares[0.0][1:]).all(), shares
    organs = len(ORGAN_CLASSES) - 1
    assert shares[1.0][1:].min() > 0.8 / organs, shares  # each organ is the drawn one a fifth of the time
    rarest = int(np.argmin(shares[0.0][1:])) + 1
    assert shares[1.0][rarest] > 2 * shares[0.0][rarest], shares


def test_volume_fusion_takes_extra_caches_of_the_same_settings(prepared, tmp_path):
    cache = prepared / "cache"
    manifest = load_manifest(cache)
    cfg = load_config(overrides=SMALL + [f"segmentation.fusion.extra_caches=[{cache}]",
                                         "segmentation.fusion.extra_slices_per_series=3"]).segmentation
    (extra,) = extra_fusion_sets(cfg.fusion, manifest, dict(context=1, crop=32))
    assert len(extra) == 3 * len(manifest) and extra[0]["image"].shape == (3, 32, 32)
    other = tmp_path / "other"
    other.mkdir()
    pd.read_csv(cache / "manifest.csv").assign(width=64).to_csv(other / "manifest.csv", index=False)
    cfg.fusion.extra_caches = [str(other)]
    with pytest.raises(ValueError, match=f"extra cache {other}: slices of"):
        extra_fusion_sets(cfg.fusion, manifest, dict(context=1, crop=32))


def test_volume_fusion_then_segmentation_on_the_trainer(prepared, tmp_path, capsys):
    fusion_out, seg_out = tmp_path / "fusion", tmp_path / "seg"
    assert cli(["pretrain", "--method", "volume-fusion", "--cache", str(prepared / "cache"), *SMALL,
                f"segmentation.fusion.train.out_dir={fusion_out}"]) == 0
    export = fusion_out / "volume_fusion.safetensors"
    assert export.exists() and "val_dice_alpha_4_of_4" in pd.read_csv(fusion_out / "summary.csv")
    cfg = load_config(overrides=SMALL).segmentation
    network = build_segmenter(cfg, 3, len(ORGAN_CLASSES))
    loaded, skipped = load_matching(network, export)
    assert loaded == len(network.state_dict()) - 2 and all(k.startswith("segmentation_head") for k in skipped)
    args = ["segment", "--cache", str(prepared / "cache"), "--folds", str(prepared / "folds.csv"), "--fold", "0",
            *SMALL, f"segmentation.weights={export}", f"segmentation.train.out_dir={seg_out}"]
    assert cli(args) == 0
    assert "dice_liver" in capsys.readouterr().out
    summary = pd.read_csv(seg_out / "fold0" / "summary.csv")
    assert {f"val_dice_{c}" for c in ORGAN_CLASSES[1:]} <= set(summary.columns) and len(summary) == 1
    # resume continues the schedule where it stopped
    assert cli(args + ["segmentation.train.epochs=2", "--resume"]) == 0
    assert len(pd.read_csv(seg_out / "fold0" / "summary.csv")) == 2
    assert load_checkpoint(seg_out / "fold0" / "last.pt")["epoch"] == 2
    with pytest.raises(ValueError, match="cached mask"):
        MaskedSliceDataset(prepared / "cache", load_manifest(prepared / "cache").assign(mask_path=None),
                           context=0, crop=16, slices_per_series=1, train=True)


@pytest.fixture(scope="module")
def pelvis(tmp_path_factory):
    """A tiny set whose scans reach down to the bowel (the shared tiny set's short scans barely do)."""
    from conftest import tiny_config
    from volslice.synthetic.generate import generate

    root = tmp_path_factory.mktemp("pelvis")
    generate(tiny_config(train_patients=4, test_patients=1, extra_unlabeled=0, slices_min=64, slices_max=72),
             root / "data")
    run_cache(root / "data", root / "cache", CacheConfig(size=48, z_mode="count", n_slices=16, workers=1),
              progress=False)
    make_folds(pd.read_csv(root / "data" / "train.csv"), pd.read_csv(root / "data" / "train_series_meta.csv"), 2,
               0).to_csv(root / "folds.csv", index=False)
    return root


def test_a_short_run_on_a_tiny_set_learns_every_organ(pelvis, tmp_path):
    """The recipe (batch Dice, crops drawn by organ, a run long enough in steps) learns every class,
    the small kidneys and the bowel included: scored on every slice of the series it trained on."""
    from volslice.segmentation.run import train_segmentation_fold

    prepared = pelvis
    overrides = [o for o in SMALL if "slices_per_series" not in o and "train.epochs" not in o]
    cfg = load_config(overrides=overrides + [
        "segmentation.slices_per_series=4", "segmentation.class_sampling=1.0", "segmentation.dice_weight=0.9",
        "segmentation.train.epochs=1", "segmentation.train.min_steps=250", "segmentation.train.lr=0.003",
        "segmentation.train.batch_size=8", f"segmentation.train.out_dir={tmp_path}"])
    folds = pd.read_csv(prepared / "folds.csv")
    train_segmentation_fold(cfg, prepared / "cache", folds, -1)
    manifest = load_manifest(prepared / "cache")
    every_slice = MaskedSliceDataset(prepared / "cache", manifest, context=1, crop=48, slices_per_series=16,
                                     train=False)
    model = build_segmenter(cfg.segmentation, 3, len(ORGAN_CLASSES))
    model.load_state_dict(load_checkpoint(tmp_path / "fold-1" / "last.pt")["model"])
    task = SegmentationTask(list(ORGAN_CLASSES))
    loader = torch.utils.data.DataLoader(every_slice, batch_size=16)
    dice = task.score([task.predict(model.eval(), loader, torch.device("cpu"))])
    assert min(dice[f"dice_{organ}"] for organ in ORGAN_CLASSES[1:]) > 0.5, str(dice)
