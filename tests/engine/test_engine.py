import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
import pytest
import torch
from torch import nn

from toy import ToyTask, toy_data, toy_model
from volslice.config import TrainConfig
from volslice.engine import Trainer, amp_dtype, warmup_cosine
from volslice.runs import load_checkpoint

HERE = Path(__file__).parent


def config(out, **changes):
    base = dict(out_dir=str(out), epochs=3, batch_size=8, lr=1e-2, warmup_epochs=1.0, workers=0, progress=False,
                amp="off", seed=3)
    return TrainConfig(**{**base, **changes})


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fit_writes_checkpoints_summary_and_curve(tmp_path):
    trainer = Trainer(toy_model(), ToyTask(), toy_data(), toy_data(32, seed=1), config(tmp_path), tmp_path,
                      config_yaml="train: {epochs: 3}\n")
    history = trainer.fit()
    assert len(history) == 3
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.epoch) == [1, 2, 3]
    assert {"train_loss", "val_score", "lr", "seconds"} <= set(summary.columns)
    assert summary.val_score.iloc[-1] < summary.val_score.iloc[0]  # it learns
    curve = np.asarray(Image.open(tmp_path / "learning_curve.png").convert("RGB")).astype(int)
    assert curve.shape == (400, 600, 3)  # 6 x 4 inches at 100 dpi
    first_colour = np.array([0x1F, 0x77, 0xB4])  # matplotlib's first line colour: the train loss
    assert (np.abs(curve - first_colour).sum(axis=-1) < 30).sum() > 100  # its line is drawn
    assert (tmp_path / "config.yaml").read_text() == "train: {epochs: 3}\n"
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 3 and last["step"] == 3 * 8 and last["config"].startswith("train")
    assert load_checkpoint(tmp_path / "best.pt")["best"] == pytest.approx(summary.val_score.min())
    assert not list(tmp_path.glob("*.tmp*"))


def test_interrupted_run_resumes_exactly(tmp_path):
    data, val = toy_data(), toy_data(32, seed=1)
    full = Trainer(toy_model(dropout=0.3), ToyTask(), data, val, config(tmp_path / "full"), tmp_path / "full")
    full.fit()
    crashing = Trainer(toy_model(dropout=0.3), ToyTask(crash_at_step=8 + 3), data, val,
                       config(tmp_path / "cut"), tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()  # dies in the middle of epoch 2; last.pt holds epoch 1
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    resumed = Trainer(toy_model(dropout=0.3, seed=99), ToyTask(), data, val, config(tmp_path / "cut"),
                      tmp_path / "cut")
    resumed.fit(resume=True)
    assert resumed.step == full.step
    assert resumed.scheduler.last_epoch == full.scheduler.last_epoch
    for key, value in weights(full.model).items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    assert pd.read_csv(tmp_path / "cut" / "summary.csv").val_score.tolist() == pytest.approx(
        pd.read_csv(tmp_path / "full" / "summary.csv").val_score.tolist())


def tensorboard_scalars(folder: Path) -> dict:
    """Every scalar the event files in ``folder`` hold: tag -> [(step, value)], as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    events = EventMultiplexer()
    events.AddRunsFromDirectory(str(folder))
    events.Reload()
    scalars: dict = {}
    for run in events.Runs():
        for tag in events.GetAccumulator(run).Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(run, tag))
    return {tag: sorted(values) for tag, values in scalars.items()}


def test_tensorboard_logger_records_every_step_and_epoch_once_across_a_resume(tmp_path):
    data, val = toy_data(), toy_data(32, seed=1)
    crashing = Trainer(toy_model(), ToyTask(crash_at_step=8 + 3), data, val, config(tmp_path, logger="tensorboard"),
                       tmp_path)
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    Trainer(toy_model(), ToyTask(), data, val, config(tmp_path, logger="tensorboard"), tmp_path).fit(resume=True)
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert [step for step, _ in scalars["epoch/val_score"]] == [8, 16, 24]  # by optimizer step
    assert [value for _, value in scalars["epoch/val_score"]] == pytest.approx(summary.val_score.tolist())
    assert [step for step, _ in scalars["step/train_loss"]] == list(range(1, 3 * 8 + 1))  # the cut epoch's 3 once
    assert {"step/lr", "epoch/train_loss", "epoch/seconds"} <= set(scalars)
    with pytest.raises(ValueError, match="train.logger='wandb': choose one of csv, tensorboard"):
        Trainer(toy_model(), ToyTask(), data, val, config(tmp_path / "x", logger="wandb"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_resuming_with_another_config_names_the_changed_keys(tmp_path, caplog):
    Trainer(toy_model(), ToyTask(), toy_data(), None, config(tmp_path, epochs=1), tmp_path,
            config_yaml="train: {epochs: 1, lr: 0.01}\n").fit()
    Trainer(toy_model(), ToyTask(), toy_data(), None, config(tmp_path, epochs=2), tmp_path,
            config_yaml="train: {epochs: 2, lr: 0.01}\n").fit(resume=True)
    assert "differs from the one it was trained with: train.epochs" in caplog.text
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def test_resuming_a_checkpoint_of_another_network_is_refused_by_name(tmp_path):
    Trainer(toy_model(), ToyTask(), toy_data(), None, config(tmp_path, epochs=1), tmp_path).fit()
    wider = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 1))
    with pytest.raises(ValueError, match=f"last.pt does not fit this network.*delete {tmp_path}"):
        Trainer(wider, ToyTask(), toy_data(), None, config(tmp_path, epochs=2), tmp_path).fit(resume=True)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # nothing overwritten


def test_gpu_code_paths_run_on_cpu(tmp_path):
    cfg = config(tmp_path, amp="bf16", ema=0.9, grad_accum=2, channels_last=True, epochs=2, clip_grad=0.5)
    trainer = Trainer(toy_model(), ToyTask(), toy_data(), toy_data(16, seed=1), cfg, tmp_path)
    assert trainer.dtype == torch.bfloat16
    trainer.fit()
    assert trainer.step == 2 * 4  # 8 batches per epoch, 2 per optimizer step
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["ema"] and any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])


def test_schedule_and_amp_choices():
    f = warmup_cosine(100, 10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) < f(20) and f(99) == pytest.approx(0.01, abs=1e-3)
    assert amp_dtype("auto", torch.device("cpu")) is None
    assert amp_dtype("fp16", torch.device("cpu")) == torch.float16
    with pytest.raises(ValueError, match="train.amp"):
        amp_dtype("int8", torch.device("cpu"))


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {here!r})
from toy import ToyTask, toy_data, toy_model
from volslice.config import TrainConfig
from volslice.engine import Trainer
cfg = TrainConfig(out_dir={out!r}, epochs=2, batch_size={batch}, lr=1e-2, workers=0, progress=False, amp="off", seed=5)
t = Trainer(toy_model(), ToyTask(), toy_data(), toy_data(31, seed=1), cfg, {out!r})  # odd: 16 + 15 over 2 ranks
t.fit()
"""


def run_script(tmp_path, name, batch, nproc):
    out = tmp_path / name
    script = tmp_path / f"{name}.py"
    script.write_text(DDP_SCRIPT.format(here=str(HERE), out=str(out), batch=batch))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script)] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", "29533",
        str(script)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    return load_checkpoint(out / "last.pt")


def test_torchrun_two_processes_train_the_same_model_as_one(tmp_path):
    single = run_script(tmp_path, "single", batch=8, nproc=1)
    double = run_script(tmp_path, "ddp", batch=4, nproc=2)
    assert double["step"] == single["step"]
    for key, value in single["model"].items():
        torch.testing.assert_close(double["model"][key], value, rtol=1e-5, atol=1e-6)
    # validation predictions are gathered from both ranks before scoring, every sample once (no padding
    # repeats a sample where 2 ranks do not divide the 31 samples)
    assert double["history"][-1]["val_score"] == pytest.approx(single["history"][-1]["val_score"], rel=1e-6)


@pytest.mark.slow
def test_torch_compile_option_trains(tmp_path):
    trainer = Trainer(toy_model(), ToyTask(), toy_data(), toy_data(16, seed=1),
                      config(tmp_path, compile=True, epochs=1), tmp_path)
    history = trainer.fit()
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    assert "_orig_mod" not in "".join(load_checkpoint(tmp_path / "last.pt")["model"])  # saved unwrapped


def test_weight_ema_equals_timms_model_ema_and_the_teacher_copies_buffers():
    from timm.utils import ModelEmaV3

    from volslice.engine import ema_update

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 1, 6, 6))
    ours, timms = copy.deepcopy(model), ModelEmaV3(model, decay=0.8)
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(4, 1, 6, 6))  # moves the BatchNorm statistics
        ema_update(ours, model, 0.0 if step <= 1 else 0.8, buffers="average")
        timms.update(model, step=step)
    for (key, value), expected in zip(ours.state_dict().items(), timms.module.state_dict().values()):
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7, msg=key)
    assert not torch.equal(ours[1].running_mean, model[1].running_mean)  # averaged, not copied
    teacher = copy.deepcopy(ours)
    ema_update(teacher, model, 0.8)
    torch.testing.assert_close(teacher[1].running_mean, model[1].running_mean, rtol=0, atol=0)
    torch.testing.assert_close(teacher[0].weight, 0.8 * ours[0].weight + 0.2 * model[0].weight)


def test_a_train_set_smaller_than_a_batch_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="3 training samples make no full batch of 8"):
        Trainer(toy_model(), ToyTask(), toy_data(3), toy_data(8), config(tmp_path, batch_size=8), tmp_path)


def test_min_steps_lengthens_a_short_run_and_never_shortens_a_long_one(tmp_path):
    # 64 toy samples, batch 8: 8 steps an epoch; min_steps=20 needs 3 epochs where 1 was asked
    short = Trainer(toy_model(), ToyTask(), toy_data(), toy_data(32, seed=1),
                    config(tmp_path / "short", epochs=1, min_steps=20), tmp_path / "short")
    history = short.fit()
    assert len(history) == 3 and short.step == 24
    # the schedule spans the lengthened run: still high after the first epoch, at its floor at the end
    assert history[0]["lr"] > 0.5 * 1e-2 and short.scheduler.get_last_lr()[0] < 1e-3
    long = Trainer(toy_model(), ToyTask(), toy_data(), None, config(tmp_path / "long", epochs=4, min_steps=5),
                   tmp_path / "long")
    assert long.epochs == 4


class RewardTask(ToyTask):
    """The toy task scored by a higher-is-better metric (the negated error)."""

    higher_is_better = True

    def score(self, predictions):
        return {"score": -super().score(predictions)["score"]}


def test_a_higher_is_better_score_keeps_the_highest_epoch(tmp_path):
    trainer = Trainer(toy_model(), RewardTask(), toy_data(), toy_data(32, seed=1), config(tmp_path), tmp_path)
    history = trainer.fit()
    scores = [row["val_score"] for row in history]
    assert scores[-1] > scores[0]  # it learns: the score rises
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["best"] == pytest.approx(max(scores)) and best["epoch"] == 1 + scores.index(max(scores))
    # without validation (fold -1) the last epoch is kept, in either direction
    for task, out in ((RewardTask(), tmp_path / "all_reward"), (ToyTask(), tmp_path / "all_loss")):
        Trainer(toy_model(), task, toy_data(), None, config(out), out).fit()
        assert load_checkpoint(out / "best.pt")["epoch"] == 3


def test_a_finished_run_is_never_overwritten_without_resume(tmp_path):
    Trainer(toy_model(), ToyTask(), toy_data(), None, config(tmp_path, epochs=1), tmp_path).fit()
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="add --resume to continue it"):
        Trainer(toy_model(seed=1), ToyTask(), toy_data(), None, config(tmp_path, epochs=1), tmp_path).fit()
    assert (tmp_path / "last.pt").read_bytes() == before


def test_val_every_validates_every_kth_epoch_and_the_last_and_trains_the_same_weights(tmp_path):
    data, val = toy_data(), toy_data(32, seed=1)
    every = Trainer(toy_model(), ToyTask(), data, val, config(tmp_path / "every", epochs=5), tmp_path / "every")
    every.fit()
    sparse = Trainer(toy_model(), ToyTask(), data, val, config(tmp_path / "sparse", epochs=5, val_every=2),
                     tmp_path / "sparse")
    history = sparse.fit()
    summary = pd.read_csv(tmp_path / "sparse" / "summary.csv")
    assert summary.val_score.notna().tolist() == [False, True, False, True, True]  # epochs 2, 4 and the last
    full = pd.read_csv(tmp_path / "every" / "summary.csv")
    validated = summary.val_score.notna()
    assert summary.val_score[validated].tolist() == pytest.approx(full.val_score[validated].tolist())
    for key, value in weights(every.model).items():  # validation draws no randomness from training
        torch.testing.assert_close(sparse.model.state_dict()[key], value, rtol=0, atol=0)
    best = load_checkpoint(tmp_path / "sparse" / "best.pt")
    assert best["best"] == pytest.approx(summary.val_score.min())
    assert best["epoch"] == int(summary.epoch[summary.val_score.idxmin()])
    assert len(history) == 5 and (tmp_path / "sparse" / "learning_curve.png").exists()


def test_val_every_below_one_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="train.val_every=0"):
        Trainer(toy_model(), ToyTask(), toy_data(), toy_data(32, seed=1), config(tmp_path, val_every=0), tmp_path)
