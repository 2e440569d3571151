import numpy as np
import pytest
import timm
import torch
from matplotlib import cbook
from PIL import Image

from volslice.models.sequence import HeadSpec, SliceSequenceModel

ONE = (HeadSpec("injury", 1),)  # a binary head, for the tests that are about the backbone or the sequence
from volslice.models.weights import (
    efficientnet_lite0_package_file,
    efficientnet_pytorch_to_timm,
    load_backbone,
    read_state_dict,
)

IMAGENET_MILITARY_UNIFORM, IMAGENET_SUIT, IMAGENET_BOW_TIE = 652, 834, 457


def grace_hopper(size=224):
    img = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((size, size))
    x = torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (x - mean[:, None, None]) / std[:, None, None]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "tf_efficientnet_lite0"])
def test_package_imagenet_weights_load_completely_and_recognise_a_photo(name):
    model = timm.create_model(name, pretrained=False, num_classes=1000).eval()
    report = load_backbone(model, efficientnet_lite0_package_file())
    assert report.missing == [] and report.unexpected == [] and report.loaded == 296
    with torch.no_grad():
        top3 = model(grace_hopper()).topk(3).indices[0].tolist()
    assert IMAGENET_MILITARY_UNIFORM in top3 and (IMAGENET_SUIT in top3 or IMAGENET_BOW_TIE in top3)


def test_renaming_covers_every_tensor():
    state = read_state_dict(efficientnet_lite0_package_file())
    renamed = efficientnet_pytorch_to_timm(state)
    own = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000).state_dict()
    assert set(renamed) == set(own)
    assert all(renamed[k].shape == own[k].shape for k in own)


def test_one_channel_backbone_gets_adapted_stem_and_reports_the_head():
    model = SliceSequenceModel(in_chans=1, heads=ONE)
    report = load_backbone(model.backbone, efficientnet_lite0_package_file())
    assert report.missing == [] and report.unexpected == ["classifier.bias", "classifier.weight"]
    stem = read_state_dict(efficientnet_lite0_package_file())["_conv_stem.weight"]
    torch.testing.assert_close(model.backbone.conv_stem.weight, stem.sum(dim=1, keepdim=True))
    assert "classifier" in str(report)


@pytest.mark.parametrize("source, target", [(1, 9), (3, 9), (2, 6)])
def test_a_stem_of_any_width_is_adapted_to_respond_alike(source, target, tmp_path):
    """A backbone pretrained on ``source`` channels (2D-VoCo: one window) loads into one of
    ``target`` (three windows x three slices): an input repeating the source channels gives the
    source model's features."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    pretrained = SliceSequenceModel(backbone="resnet10t", in_chans=source, heads=ONE).eval()
    save_file({k: v.contiguous() for k, v in pretrained.backbone.state_dict().items()}, str(tmp_path / "b.safetensors"))
    model = SliceSequenceModel(backbone="resnet10t", in_chans=target, heads=ONE).eval()
    report = load_backbone(model.backbone, tmp_path / "b.safetensors")
    assert report.missing == [] and report.unexpected == []
    x = torch.rand(2, source, 32, 32)
    torch.testing.assert_close(model.backbone(x.repeat(1, target // source, 1, 1)), pretrained.backbone(x),
                               rtol=1e-4, atol=1e-5)


def test_checkpoint_prefix_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    source = SliceSequenceModel(backbone="resnet10t", in_chans=2, heads=ONE)
    save_file({f"student.backbone.{k}": v.contiguous() for k, v in source.backbone.state_dict().items()},
              str(tmp_path / "ssl.safetensors"))
    target = SliceSequenceModel(backbone="resnet10t", in_chans=2, heads=ONE)
    report = load_backbone(target.backbone, tmp_path / "ssl.safetensors", prefix="student.backbone.")
    assert report.missing == [] and report.unexpected == []
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(target.backbone.state_dict()[key], value)


@pytest.mark.parametrize("sequence, pooling", [("lstm", "max"), ("gru", "mean"), ("transformer", "attention"),
                                               ("none", "max")])
def test_shapes(sequence, pooling):
    model = SliceSequenceModel(backbone="resnet10t", in_chans=3, sequence=sequence, pooling=pooling,
                               hidden=16, slice_labels=2, heads=(HeadSpec("bowel", 1), HeadSpec("liver", 3)))
    out = model(torch.randn(2, 5, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items() if k in ("bowel", "liver", "slices")} == {
        "bowel": (2, 1), "liver": (2, 3), "slices": (2, 5, 2)}
    if pooling == "attention":
        torch.testing.assert_close(out["slice_weights"].sum(dim=1), torch.ones(2))


def test_single_organ_mode_has_one_head():
    model = SliceSequenceModel(backbone="resnet10t", heads=(HeadSpec("liver", 3),))
    assert set(model(torch.randn(1, 3, 1, 32, 32))) == {"liver"}


def test_built_heads_are_the_competition_heads():
    from volslice.competitions import rsna2023 as comp
    from volslice.config import ModelConfig
    from volslice.models.build import build_classifier

    model, _ = build_classifier(ModelConfig(backbone="resnet10t", init="scratch"), 1, comp.COMPETITION)
    out = model(torch.randn(1, 2, 1, 32, 32))
    assert set(out) == set(comp.GROUPS)
    for name, columns in comp.GROUPS.items():  # a binary group has one logit, the others one per class
        assert out[name].shape == (1, 1 if len(columns) == 2 else len(columns))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="at least one head"):
        SliceSequenceModel(backbone="resnet10t")
    with pytest.raises(ValueError, match="sequence"):
        SliceSequenceModel(backbone="resnet10t", sequence="conv", heads=ONE)
    with pytest.raises(ValueError, match="pooling"):
        SliceSequenceModel(backbone="resnet10t", pooling="median", heads=ONE)


def test_mask_head_predicts_organ_maps_and_leaves_the_heads_as_they_were():
    torch.manual_seed(0)
    heads = tuple(HeadSpec(name, 1) for name in ("bowel", "extravasation", "kidney", "liver", "spleen"))
    plain = SliceSequenceModel(backbone="resnet10t", in_chans=1, hidden=8, heads=heads).eval()
    torch.manual_seed(0)
    masked = SliceSequenceModel(backbone="resnet10t", in_chans=1, hidden=8, mask_channels=5, heads=heads).eval()
    x = torch.randn(2, 3, 1, 64, 64)
    with torch.no_grad():
        out, reference = masked(x), plain(x)
        views = masked(torch.randn(2, 5, 3, 1, 64, 64))
    assert out["masks"].shape == (2 * 3, 5, 2, 2) and views["masks"].shape == (2 * 5 * 3, 5, 2, 2)
    torch.testing.assert_close(out["liver"], reference["liver"])
