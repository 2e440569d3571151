import numpy as np
import pytest
import torch

from volslice.config import load_config
from volslice.data.inputs import (InputSpec, crop_views, cut_and_resize, organ_crops, organs_z_range,
                                  sample_input)
from volslice.competitions.rsna2023 import COMPETITION, HEAD_ORGANS
from volslice.models.sequence import HeadSpec, SliceSequenceModel
from volslice.segmentation.organs import organ_record


def organ_heads(*names) -> tuple:
    """(head, organs) pairs of RSNA 2023's heads, as ``InputSpec.heads`` holds them."""
    return tuple((name, HEAD_ORGANS.get(name, ())) for name in names)


def labelled_volume():
    """(z, y, x) labels: liver, two kidneys, bowel in two pieces, a stray liver voxel."""
    masks = np.zeros((20, 64, 64), np.uint8)
    masks[4:12, 10:30, 8:40] = 1  # liver
    masks[6:15, 30:42, 10:18] = 3  # left kidney
    masks[7:14, 32:44, 46:54] = 4  # right kidney
    masks[10:16, 50:56, 20:26] = 5  # bowel, two loops
    masks[12:18, 50:54, 40:44] = 5
    masks[18, 60, 60] = 1  # a stray liver voxel far from the liver
    return masks


def test_organ_record_boxes_presence_and_mm():
    masks = labelled_volume()
    z_mm = np.arange(20) * 5.0 - 40
    record = organ_record(masks, z_mm, pixel_spacing_mm=0.5)
    assert record["boxes"]["liver"] == [4, 12, 10, 30, 8, 40]  # the stray voxel is dropped
    assert record["boxes"]["left_kidney"] == [6, 15, 30, 42, 10, 18]
    assert record["boxes"]["bowel"] == [10, 18, 50, 56, 20, 44]  # bowel keeps both loops
    assert record["boxes"]["spleen"] is None and record["boxes_mm"]["spleen"] is None
    assert record["presence"]["liver"] == [0] * 4 + [1] * 8 + [0] * 8
    assert record["boxes_mm"]["liver"] == {"z": [-20.0, 15.0], "y": [5.0, 15.0], "x": [4.0, 20.0]}
    assert organs_z_range(record, ["liver"], 0.25, 20) == (2, 14)
    assert organs_z_range(record, ["left_kidney", "right_kidney"], 0.0, 20) == (6, 15)
    assert organs_z_range(record, ["spleen"], 0.25, 20) is None


def test_cut_and_resize_pads_outside_the_image_with_zeros():
    stack = np.full((2, 1, 10, 10), 7, np.uint8)
    out = cut_and_resize(stack, (-5, 5, 5, 15), 10, 10)
    assert out.shape == (2, 1, 10, 10)
    np.testing.assert_array_equal(out[:, :, :5, :], 0)
    np.testing.assert_array_equal(out[:, :, 5:, :5], 7)
    np.testing.assert_array_equal(out[:, :, 5:, 5:], 0)


def organ_volume():
    """(z, 1, y, x) images whose value tells the organ: liver 200, left kidney 100, right kidney 150."""
    masks = labelled_volume()
    images = np.zeros(masks.shape, np.uint8)
    images[masks == 1], images[masks == 3], images[masks == 4] = 200, 100, 150
    return images[:, None], organ_record(masks)


def test_organ_crops_cut_each_organ_and_each_kidney_on_its_own():
    images, record = organ_volume()
    spec = InputSpec(n_slices=5, crop=32, input="organs", organ_margin=0.2, heads=organ_heads("kidney", "liver"))
    crops, picks = sample_input(images, spec, train=False, record=record)
    assert crops.shape == (3, 5, 1, 32, 32) and crops.dtype == np.uint8 and picks is None
    left, right, liver = crops
    # picks span the liver's z range (4..11) widened by 20 %: the first and last lie in the margin
    assert liver[:, 0, 16, 16].tolist() == [0, 200, 200, 200, 0]
    # the square window around the liver (44 px about its centre, beyond the image at the top) -> 32 px
    assert (liver[1:-1, 0, 0, :] == 0).all() and (liver[1:-1, 0, 10:22, 6:26] == 200).all()
    # each kidney over its own z range (left 6..14, right 7..13) in a square window of its own box
    assert left[:, 0, 16, 16].tolist() == [0, 100, 100, 100, 0]
    assert right[:, 0, 16, 16].tolist() == [0, 150, 150, 150, 0]
    # its 12 x 8 px box widened to a 17 px square, 32 px: the kidney fills 19 x 13 px of it
    assert (left[1:-1, 0, 5:22, 16] == 100).all() and (left[1:-1, 0, 16, 9:22] == 100).all()
    assert (left[1:-1, 0, 16, :6] == 0).all() and (left[1:-1, 0, 27:, 16] == 0).all()
    # training moves the slices and the box a little, never off the organ's centre
    torch.manual_seed(0)
    jittered = organ_crops(images, record, "liver", spec, train=True)
    assert not np.array_equal(jittered, liver) and (jittered[1:-1, 0, 16, 16] == 200).all()


def test_an_organ_not_found_gets_the_whole_slices():
    images, record = organ_volume()
    spec = InputSpec(n_slices=4, crop=16, input="organs", heads=organ_heads("spleen"))
    crops, _ = sample_input(images, spec, train=False, record=record)
    expected = cut_and_resize(images[np.rint(np.linspace(0, 19, 4)).astype(int)], (0, 64, 0, 64), 16, 16)
    np.testing.assert_array_equal(crops[0], expected)


def test_slice_range_organs_picks_slices_where_the_organs_are():
    images, record = organ_volume()
    spec = InputSpec(n_slices=6, crop=64, slice_range="organs", organ_margin=0.0)
    _, picks = sample_input(images, spec, train=False, record=record)
    assert picks.min() == 4 and picks.max() == 17  # liver starts at 4, bowel ends at 18 (half-open)
    _, all_picks = sample_input(images, InputSpec(n_slices=6, crop=64), train=False)
    assert all_picks.min() == 0 and all_picks.max() == 19
    with pytest.raises(ValueError, match="organ record"):
        sample_input(images, spec, train=False)


def test_input_settings_are_checked():
    with pytest.raises(ValueError, match="bowel"):
        InputSpec.from_config(load_config(overrides=["model.input=organs"]), COMPETITION)
    with pytest.raises(ValueError, match="slice_loss_weight"):
        InputSpec.from_config(load_config(overrides=["model.input=organs", "model.heads=[liver]",
                                                     "model.slice_loss_weight=0.5"]), COMPETITION)
    with pytest.raises(ValueError, match="model.slice_range"):
        InputSpec.from_config(load_config(overrides=["model.slice_range=some"]), COMPETITION)
    spec = InputSpec.from_config(load_config(overrides=["model.input=organs", "model.heads=[kidney,spleen]"]), COMPETITION)
    assert spec.needs_organs and spec.heads == organ_heads("kidney", "spleen")


def test_the_kidney_head_reads_both_kidneys():
    torch.manual_seed(0)
    heads = (HeadSpec("kidney", 3), HeadSpec("spleen", 3))
    model = SliceSequenceModel("resnet10t", in_chans=1, hidden=8, heads=heads, views=crop_views(organ_heads("kidney", "spleen")))
    model.eval()
    x = torch.randn(2, 3, 4, 1, 32, 32)  # (batch, left kidney | right kidney | spleen, slices, C, H, W)
    out = model(x)
    with torch.no_grad():
        pooled = torch.stack([model._pool(x[:, v])[0] for v in range(3)], 1)
        torch.testing.assert_close(out["kidney"], model.heads["kidney"](pooled[:, :2].max(1).values))
        torch.testing.assert_close(out["spleen"], model(x[:, 2])["spleen"])
        swapped = model(x[:, [1, 0, 2]])  # which kidney is which does not matter
    torch.testing.assert_close(out["kidney"], swapped["kidney"])


def test_each_head_reads_its_own_organs_crops():
    torch.manual_seed(0)
    heads = (HeadSpec("liver", 3), HeadSpec("spleen", 3))
    model = SliceSequenceModel("resnet10t", in_chans=1, hidden=8, heads=heads).eval()
    x = torch.randn(2, 2, 3, 1, 32, 32)  # (batch, organs, slices, C, H, W)
    out = model(x)
    with torch.no_grad():
        torch.testing.assert_close(out["liver"], model(x[:, 0])["liver"])
        torch.testing.assert_close(out["spleen"], model(x[:, 1])["spleen"])
    assert out["liver"].shape == (2, 3)
    with pytest.raises(ValueError, match="3 organ crop sequences for heads that read 2"):
        model(torch.randn(1, 3, 2, 1, 32, 32))


@pytest.mark.parametrize("context, organ_input", [(0, False), (1, False), (0, True)])
def test_masks_ride_along_with_the_image(context, organ_input):
    """Sampled from a VolumeWithMasks, the image is exactly what sample_input gives without the masks
    (same random draws), and each organ's mask channel marks that organ's pixels of the centre slice."""
    from volslice.data.inputs import VolumeWithMasks, split_masks

    masks = labelled_volume()
    volume = (masks[:, None] * 40 + 10).astype(np.uint8)  # every organ its own grey level
    heads = ["liver", "kidney"] if organ_input else ["bowel"]
    spec = InputSpec(n_slices=6, crop=32, context=context, input="organs" if organ_input else "slices",
                     heads=organ_heads(*heads))
    record = organ_record(masks) if organ_input else None
    torch.manual_seed(3)
    plain, _ = sample_input(volume, spec, True, record)
    torch.manual_seed(3)
    stack, _ = sample_input(VolumeWithMasks(volume, masks), spec, True, record)
    image, organs = split_masks(stack, 1, context)
    np.testing.assert_array_equal(image, plain)
    assert organs.shape == (*plain.shape[:-3], 5, 32, 32)
    centre = image[..., context, :, :].astype(int)
    for k in range(5):  # where a mask channel is fully on, the centre slice shows that organ's grey level
        on = organs[..., k, :, :] == 255
        if on.any():
            assert (centre[on] == (k + 1) * 40 + 10).all()
    assert (organs == 255).any()
