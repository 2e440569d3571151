import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from volslice import competitions
from volslice.config import CacheConfig, ModelConfig, load_config
from volslice.data.cache_runner import run_cache
from volslice.models.build import build_classifier
from volslice.models.weights import efficientnet_lite0_package_file, efficientnet_pytorch_to_timm
from volslice.pretraining.run import BACKBONE_FILE, export_backbone
from volslice.pretraining.model import BACKBONE_PREFIX, build_voco
from volslice.pretraining.task import VoCoTask
from volslice.runs import load_checkpoint
from volslice.cli import main as cli


def pretrain_main(argv):
    return cli(["pretrain", *argv])


SMALL = ["model.backbone=resnet10t", "pretrain.volume_depth=8", "pretrain.volume_size=48", "pretrain.slices_per_crop=4",
         "pretrain.projection_dim=64", "pretrain.workers=1", "pretrain.val_fraction=0.2", "pretrain.train.epochs=6",
         "pretrain.train.batch_size=4", "pretrain.train.lr=0.003", "pretrain.train.warmup_epochs=0",
         "pretrain.train.workers=0", "pretrain.train.progress=false", "pretrain.train.channels_last=true"]


@pytest.fixture(scope="module")
def cache(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain_cache")
    run_cache(tiny_data, out, CacheConfig(size=48, z_mode="count", n_slices=16, workers=1), progress=False)
    return out


def test_short_pretraining_lowers_the_position_loss_and_feeds_the_classifier(tiny_data, cache, tmp_path, capsys):
    out = tmp_path / "pretrain"
    args = ["--cache", str(cache), "--extra", str(tiny_data / "extra_unlabeled"), *SMALL, f"pretrain.train.out_dir={out}"]
    assert pretrain_main(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert {"loss_position", "loss_inter", "loss_regularisation", "val_position"} <= set(summary.columns)
    assert summary.loss_position.iloc[-2:].mean() < 0.92 * summary.loss_position.iloc[:2].mean()
    assert summary.val_position.iloc[-1] < 0.75 * summary.val_position.iloc[0]  # on fixed held-out crops
    printed = capsys.readouterr().out
    assert "0 missing, 0 unexpected" in printed
    # the teacher followed the student but is not a copy of it
    state = load_checkpoint(out / "last.pt")["model"]
    key = "encoder.backbone.conv1.0.weight"
    assert not torch.equal(state[f"student.{key}"], state[f"teacher.{key}"])
    # fine-tuning starts from the exported backbone, every tensor in place
    model, report = build_classifier(ModelConfig(backbone="resnet10t", init="file", weights=str(out / BACKBONE_FILE)),
                                     1, competitions.get("rsna2023"))
    assert report.missing == [] and report.unexpected == []
    best = load_checkpoint(out / "best.pt")["model"]
    torch.testing.assert_close(model.backbone.conv1[0].weight, best["student.encoder.backbone.conv1.0.weight"])
    # resuming a finished run trains no more
    assert pretrain_main(args + ["--resume"]) == 0
    assert len(pd.read_csv(out / "summary.csv")) == len(summary)


def test_3d_variant_runs_the_same_pretext_and_exports_no_2d_backbone(tmp_path):
    cfg = load_config(overrides=["pretrain.encoder=3d", "pretrain.volume_size=48", "pretrain.projection_dim=32"])
    model, _ = build_voco(cfg.pretrain, cfg.model)
    batch = {"crops": torch.randint(0, 255, (2, 11, 8, 16, 16), dtype=torch.uint8), "labels": torch.rand(2, 2, 9)}
    loss, logs = VoCoTask(cfg.pretrain).train_loss(model, batch, "cpu")
    loss.backward()
    assert torch.isfinite(loss) and set(logs) == {"loss_position", "loss_inter", "loss_regularisation"}
    torch.save({"model": model.state_dict()}, tmp_path / "3d.pt")
    with pytest.raises(ValueError, match="no student.encoder.backbone"):
        export_backbone(tmp_path / "3d.pt", tmp_path / "out.safetensors")


def test_imagenet_start_loads_the_packaged_weights_and_refuses_what_it_cannot_load():
    small = ["pretrain.volume_size=48", "pretrain.projection_dim=32", "pretrain.init=imagenet"]
    cfg = load_config(overrides=[*small, "model.backbone=efficientnet_lite0"])
    model, note = build_voco(cfg.pretrain, cfg.model)
    assert "0 missing" in note
    packaged = efficientnet_pytorch_to_timm(torch.load(efficientnet_lite0_package_file(), weights_only=True))
    key = "blocks.1.0.conv_pw.weight"
    torch.testing.assert_close(model.state_dict()[BACKBONE_PREFIX + key], packaged[key])
    with pytest.raises(ValueError, match="needs pretrain.encoder=2d"):
        build_voco(load_config(overrides=[*small, "pretrain.encoder=3d"]).pretrain, cfg.model)
    with pytest.raises(ValueError, match="no packaged ImageNet weights for 'resnet10t'.*pretrain.init=scratch"):
        build_voco(load_config(overrides=[*small, "model.backbone=resnet10t"]).pretrain,
                   load_config(overrides=["model.backbone=resnet10t"]).model)


@pytest.mark.slow
def test_pretraining_under_torchrun_with_two_processes(tiny_data, cache, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
           "-m", "volslice", "pretrain", "--cache", str(cache), *SMALL, "pretrain.train.epochs=2",
           "pretrain.train.batch_size=2", f"pretrain.train.out_dir={out}"]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("epoch 2/2") == 1  # only rank 0 reports
    assert len(pd.read_csv(out / "summary.csv")) == 2 and (out / BACKBONE_FILE).exists()
