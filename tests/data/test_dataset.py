import numpy as np
import pandas as pd
import pytest
import torch

from volslice.competitions import rsna2023 as comp
from volslice.config import CacheConfig
from volslice.data.manifest import load_manifest
from volslice.data.cache_runner import run_cache
from volslice.data.dataset import SeriesDataset
from volslice.data.inputs import InputSpec, select_slices


@pytest.fixture(scope="module")
def keep_cache(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("keep_cache")
    run_cache(tiny_data, out, CacheConfig(size=48, z_mode="keep", workers=1), progress=False)
    return out


def test_select_slices():
    assert select_slices(10, 5, jitter=False).tolist() == [0, 2, 4, 7, 9]
    torch.manual_seed(0)
    for _ in range(20):
        picks = select_slices(100, 10, jitter=True)
        assert np.all((picks >= np.arange(10) * 10) & (picks < np.arange(1, 11) * 10))
    assert select_slices(3, 6, jitter=False).tolist() == [0, 0, 1, 1, 2, 2]


def test_items_carry_slices_targets_and_slice_labels(tiny_data, keep_cache):
    manifest = load_manifest(keep_cache)
    train = manifest[manifest.split == "train"]
    labels = pd.read_csv(tiny_data / "train.csv")
    image_labels = comp.COMPETITION.read_auxiliary_labels(tiny_data)
    heads = {g: comp.GROUPS[g] for g in comp.GROUP_NAMES}
    ds = SeriesDataset(keep_cache, train, heads, labels=labels.set_index("patient_id"), auxiliary_labels=image_labels,
                       slice_heads=comp.IMAGE_LEVEL_COLUMNS, spec=InputSpec(n_slices=8, crop=40, context=1))
    assert len(ds) == len(train)
    unknown_free = 0  # slice labels of patients without that injury: known negatives
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (8, 3, 40, 40) and item["image"].dtype == torch.uint8
        label = labels.set_index("patient_id").loc[item["patient_id"]]
        assert float(item["target_bowel"]) == label.bowel_injury
        assert int(item["target_liver"]) == int(np.argmax(label[comp.GROUPS["liver"]].to_numpy()))
        assert item["slice_target"].shape == item["slice_mask"].shape == (8, 2)
        for j, column in enumerate(comp.IMAGE_LEVEL_COLUMNS.values()):
            if label[column] == 0:
                assert item["slice_mask"][:, j].all() and not item["slice_target"][:, j].any()
                unknown_free += 1
    assert unknown_free > 0
    # a series with listed extravasation slices: the targets are exactly the listed instances
    listed = image_labels[image_labels.label == "Active_Extravasation"]
    assert len(listed) > 0
    series_id = listed.series_id.iloc[0]
    row = train[train.series_id == series_id].iloc[0]
    ds_all = SeriesDataset(keep_cache, train[train.series_id == series_id], heads, labels=labels.set_index("patient_id"),
                           auxiliary_labels=image_labels, slice_heads=comp.IMAGE_LEVEL_COLUMNS,
                           spec=InputSpec(n_slices=row.slices, crop=48))
    target = ds_all[0]["slice_target"][:, 0].numpy().astype(bool)
    expected = np.isin(row.instance_numbers, listed[listed.series_id == series_id].instance_number)
    assert 0 < expected.sum() < len(expected)
    np.testing.assert_array_equal(target, expected)


def test_centre_crop_is_deterministic_and_random_crop_moves(keep_cache):
    manifest = load_manifest(keep_cache)
    heads = {"liver": comp.GROUPS["liver"]}
    val = SeriesDataset(keep_cache, manifest, heads, spec=InputSpec(n_slices=4, crop=32))
    torch.manual_seed(0)
    first = val[0]["image"]
    torch.manual_seed(1)
    assert torch.equal(val[0]["image"], first)  # validation does not draw from the RNG
    volume = np.load(keep_cache / manifest.image_path.iloc[0])
    picks = select_slices(volume.shape[0], 4, jitter=False)
    assert torch.equal(val[0]["image"], torch.from_numpy(volume[picks][..., 8:40, 8:40].copy()))
    train = SeriesDataset(keep_cache, manifest, heads, spec=InputSpec(n_slices=4, crop=32), train=True)
    torch.manual_seed(1)
    assert len({train[0]["image"].float().sum().item() for _ in range(6)}) > 1
