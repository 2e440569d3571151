"""One training machinery for every model of the project (fine-tuning and pretraining today).

A *task* says what differs: how a batch becomes a loss, how a model predicts on a loader, and
how predictions are scored. The trainer does the rest: device and DDP (``torchrun``), AMP,
channels_last, optional ``torch.compile``, gradient accumulation and clipping, EMA, a warmup +
cosine schedule by optimizer step, per-epoch seeding, atomic checkpoints with everything resume
needs, ``summary.csv``, a learning-curve PNG and rank-0 progress bars.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from volslice.config import TrainConfig, changed_keys
from volslice.io import atomic_path, atomic_write_csv, atomic_write_text
from volslice.runs import load_checkpoint, load_weights

log = logging.getLogger(__name__)


class Task(Protocol):
    """What a model kind brings to the Trainer: its loss, its predictions on a loader and their score.
    Every model kind's task implements it (``classifier.task.ClassificationTask``, ``segmentation.task``, ...)."""

    def train_loss(self, model, batch, device) -> tuple[torch.Tensor, dict]:
        """(loss to back-propagate, dict of floats to log) for one training batch."""

    def predict(self, model, loader, device, progress: bool) -> Any:
        """This process's predictions on ``loader`` (gathered from every process before ``score``)."""

    def score(self, predictions: list) -> dict:
        """Metrics of the gathered predictions; ``score`` decides the best epoch."""

    # optional: ``higher_is_better`` (default False: ``score`` is a loss) and ``after_step(model)``,
    # run after every optimizer step (e.g. a momentum teacher)


@dataclass
class DistContext:
    """Which process this is under torchrun (one process without it)."""
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """The process that writes files and logs (rank 0)."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistContext":
        """torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them, one process."""
        ctx = cls(int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0)),
                  int(os.environ.get("LOCAL_RANK", 0)))
        if ctx.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return ctx

    def barrier(self) -> None:
        """Wait for every process (no-op in one process)."""
        if self.enabled:
            dist.barrier()

    def gather(self, obj) -> list:
        """``obj`` from every process, in rank order (``[obj]`` in one process)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def resolve_device(name: str, ctx: DistContext) -> torch.device:
    """``auto``: this process's GPU where there is one, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device(f"cuda:{ctx.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def amp_dtype(mode: str, device: torch.device):
    """None (full precision), torch.bfloat16 or torch.float16. ``auto``: bf16 (or fp16) on GPU, off on CPU."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode in ("bf16", "fp16"):
        return torch.bfloat16 if mode == "bf16" else torch.float16
    raise ValueError(f"train.amp must be auto, bf16, fp16 or off, got {mode!r}")


def warmup_cosine(total_steps: int, warmup_steps: int, min_factor: float = 0.01):
    """LambdaLR factor by optimizer step: linear warmup to 1, then cosine down to ``min_factor``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def epochs_for(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The epochs a run trains: ``train.epochs``, or more where that many epochs of
    ``steps_per_epoch`` optimizer steps would fall short of ``train.min_steps`` (a small fold
    still gets the steps its model needs; a large one is not cut short)."""
    return max(cfg.epochs, math.ceil(cfg.min_steps / max(steps_per_epoch, 1)))


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Channels-last convolution weights, 2D and 3D (``model.to(memory_format=...)`` rejects 5D weights)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=torch.channels_last)
        elif isinstance(module, torch.nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, without its DDP and torch.compile wrappers (what checkpoints store)."""
    model = model.module if isinstance(model, DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)


@torch.no_grad()
def ema_update(average: torch.nn.Module, model: torch.nn.Module, decay: float, buffers: str = "copy") -> None:
    """average <- decay * average + (1 - decay) * model, tensor by tensor: the Trainer's weight EMA
    (``train.ema``) and the 2D-VoCo momentum teacher. Buffers (BatchNorm's running statistics) are
    copied (``"copy"``: the teacher) or averaged too where floating point (``"average"``: the weight
    EMA, as timm's ModelEmaV3 does; a test checks the two agree)."""
    if buffers == "average":
        for a, m in zip(average.state_dict().values(), model.state_dict().values()):
            if a.is_floating_point():
                a.lerp_(m.to(a.dtype), 1 - decay)
            else:
                a.copy_(m)
        return
    for a, m in zip(average.parameters(), model.parameters()):
        a.lerp_(m.detach(), 1 - decay)
    for a, m in zip(average.buffers(), model.buffers()):
        a.copy_(m)


class Trainer:
    """The one training loop: fits ``model`` on ``task`` with ``cfg``, writing checkpoints, summary.csv
    and the learning curve to ``out_dir``; ``fit(resume=True)`` continues exactly where last.pt stopped."""

    def __init__(self, model: torch.nn.Module, task: Task, train_set, val_set, cfg: TrainConfig, out_dir,
                 *, collate_fn=None, config_yaml: str = ""):
        self.cfg, self.task, self.out = cfg, task, Path(out_dir)
        self.ctx = DistContext.from_env()
        self.device = resolve_device(cfg.device, self.ctx)
        self.dtype = amp_dtype(cfg.amp, self.device)
        self.train_set, self.val_set, self.collate_fn = train_set, val_set, collate_fn
        self.config_yaml = config_yaml
        model = model.to(self.device)
        if cfg.channels_last:
            model = to_channels_last(model)
        self.model = model
        self.ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema > 0 else None
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.train_loader(0)) / cfg.grad_accum)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train_set)} training samples make no full batch of {cfg.batch_size} per process "
                             f"(the last, incomplete batch is dropped): lower the batch size")
        if cfg.val_every < 1:
            raise ValueError(f"train.val_every={cfg.val_every}: validate every k >= 1 epochs")
        self.epochs = epochs_for(cfg, self.steps_per_epoch)
        if self.epochs > cfg.epochs and self.ctx.main:
            log.info("%d optimizer steps per epoch: %d epochs instead of %d, for train.min_steps=%d",
                     self.steps_per_epoch, self.epochs, cfg.epochs, cfg.min_steps)
        total = self.steps_per_epoch * self.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, int(cfg.warmup_epochs * self.steps_per_epoch)))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.net = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                           else None) if self.ctx.enabled else model
        if cfg.compile:
            self.net = torch.compile(self.net)
        if cfg.logger not in LOGGERS:
            raise ValueError(f"train.logger={cfg.logger!r}: choose one of {', '.join(LOGGERS)}")
        if cfg.logger == "tensorboard":
            tensorboard_writer_class()  # on every process: a missing package fails all ranks alike, before any work
        self.logger = None  # the TensorBoard writer, opened by fit
        self.higher_is_better = bool(getattr(task, "higher_is_better", False))
        self.epoch, self.step, self.best = 0, 0, -float("inf") if self.higher_is_better else float("inf")
        self.history: list[dict] = []

    def train_loader(self, epoch: int) -> DataLoader:
        """The same shuffled order for any number of processes: rank r takes every world_size-th
        sample, so the union of the ranks' k-th batches is the single process's k-th batch
        (with batch_size per rank = global batch / world size)."""
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        sampler = DistributedSampler(self.train_set, self.ctx.world_size, self.ctx.rank, shuffle=True,
                                     seed=self.cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
        return DataLoader(self.train_set, batch_size=self.cfg.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, collate_fn=self.collate_fn, generator=generator,
                          worker_init_fn=_seed_worker)

    def val_loader(self) -> DataLoader:
        """The validation loader: every sample exactly once over the processes (rank r takes every
        world_size-th from r; no padding, which DistributedSampler adds and which would count the
        first samples twice where the size does not divide)."""
        if self.val_set is None:
            return None
        sampler = range(self.ctx.rank, len(self.val_set), self.ctx.world_size)
        return DataLoader(self.val_set, batch_size=self.cfg.batch_size, sampler=sampler,
                          num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda",
                          collate_fn=self.collate_fn)

    def autocast(self):
        """The autocast context of ``train.amp`` on this device (a null context when off)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ---- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything resume needs: weights, EMA, optimizer, scheduler, grad scaler, epoch and step,
        best score, history and config (each epoch reseeds the RNGs from its number)."""
        return {
            "model": unwrap(self.model).state_dict(),
            "ema": self.ema.state_dict() if self.ema else {},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "best": self.best,
            "history": [{k: (float(v) if isinstance(v, (int, float, np.floating)) else str(v)) for k, v in row.items()}
                        for row in self.history],
            "config": self.config_yaml,
        }

    def save(self, name: str) -> None:
        """Write the state to ``out_dir/name`` atomically (main process only)."""
        if not self.ctx.main:
            return
        with atomic_path(self.out / name) as tmp:
            torch.save(self.state(), tmp)

    def resume(self, path=None) -> bool:
        """Load ``path`` (default last.pt) into model, EMA, optimizer, scheduler and scaler; False if absent.
        The config keys that differ from the checkpoint's are named in a warning."""
        path = Path(path) if path else self.out / "last.pt"
        if not path.exists():
            return False
        state = load_checkpoint(path, map_location=self.device)
        changed = changed_keys(yaml.safe_load(state["config"]), yaml.safe_load(self.config_yaml)) \
            if state.get("config") and self.config_yaml else []
        if changed and self.ctx.main:
            log.warning("resuming %s with a config that differs from the one it was trained with: %s "
                        "(delete %s to start afresh)", path, ", ".join(changed), self.out)
        load_weights(unwrap(self.model), state["model"], path,
                     f"it was trained with another network; delete {self.out} to train it afresh")
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.best = int(state["epoch"]), int(state["step"]), float(state["best"])
        self.history = list(state["history"])
        return True

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> list[dict]:
        """Train for ``epochs_for`` the config (``train.epochs``, more where ``train.min_steps`` asks),
        validating, checkpointing and logging after every epoch; returns the history. A folder that
        already holds a run is refused unless ``resume``: nothing is overwritten silently."""
        if not resume and (self.out / "last.pt").exists():
            raise FileExistsError(f"{self.out} holds a trained model (last.pt): add --resume to continue it, or "
                                  "give the run another output folder")
        self.out.mkdir(parents=True, exist_ok=True)
        if self.ctx.main and self.config_yaml:
            atomic_write_text(self.out / "config.yaml", self.config_yaml)
        if resume and self.resume() and self.ctx.main:
            log.info("resumed from %s after epoch %d (step %d)", self.out / "last.pt", self.epoch, self.step)
        if self.ctx.main and self.cfg.logger == "tensorboard":  # step 1 on a fresh start: a crashed one's events go
            self.logger = tensorboard_writer_class()(log_dir=str(self.out / "tensorboard"), purge_step=self.step + 1)
        try:
            self._fit_epochs()
        finally:
            if self.logger:
                self.logger.close()
        return self.history

    def _fit_epochs(self) -> None:
        while self.epoch < self.epochs:
            start = time.perf_counter()
            train_logs = self.train_epoch(self.epoch)
            validated = self.validates_after(self.epoch + 1)
            if self.val_set is None:  # fold -1, training on everything: the last epoch is kept as best
                metrics = {"score": self._last_epoch_score()}
            else:
                metrics = self.evaluate() if validated else {}
            self.epoch += 1
            row = {"epoch": self.epoch, **train_logs, **{f"val_{k}": v for k, v in metrics.items()},
                   "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start}
            self.history.append(row)
            improved = bool(metrics) and (metrics["score"] > self.best if self.higher_is_better
                                          else metrics["score"] < self.best)
            if improved:
                self.best = metrics["score"]
            self.save("last.pt")
            if improved:
                self.save("best.pt")
            if self.ctx.main:
                atomic_write_csv(self.out / "summary.csv", pd.DataFrame(self.history))
                if validated:
                    plot_history(self.history, self.out / "learning_curve.png")
                if self.logger:
                    for key, value in row.items():
                        if key != "epoch" and isinstance(value, (int, float, np.floating)):
                            self.logger.add_scalar(f"epoch/{key}", float(value), self.step)
                    self.logger.flush()
                if metrics:
                    log.info("epoch %d/%d: train loss %.4f, val score %.4f%s", self.epoch, self.epochs,
                             train_logs["train_loss"], metrics["score"], " (best)" if improved else "")
                else:
                    log.info("epoch %d/%d: train loss %.4f", self.epoch, self.epochs, train_logs["train_loss"])
            self.ctx.barrier()

    def train_epoch(self, epoch: int) -> dict:
        """One epoch (seeded by epoch and rank); the mean of each logged value."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed * 1000 + epoch * 10 + self.ctx.rank)
        loader = self.train_loader(epoch)
        self.net.train()
        totals: dict[str, float] = {}
        count = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}", disable=not self.ctx.main or not cfg.progress, leave=False)
        self.optimizer.zero_grad(set_to_none=True)
        window: list[float] = []
        for i, batch in enumerate(bar):
            last_micro = (i + 1) % cfg.grad_accum == 0 or i + 1 == len(loader)
            sync = contextlib.nullcontext() if last_micro or not self.ctx.enabled else self.net.no_sync()
            with sync:
                with self.autocast():
                    loss, logs = self.task.train_loss(self.net, batch, self.device)
                self.scaler.scale(loss / cfg.grad_accum).backward()
            if last_micro:
                self.scaler.unscale_(self.optimizer)
                if cfg.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.step += 1
                if self.ema:  # the first step copies the weights, as timm's ModelEmaV3 does
                    decay = 0.0 if self.step <= 1 else cfg.ema
                    ema_update(self.ema, unwrap(self.model), decay, buffers="average")
                if hasattr(self.task, "after_step"):
                    self.task.after_step(self.model)
            logs = {"train_loss": float(loss.detach()), **logs}
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            count += 1
            window.append(logs["train_loss"])
            if self.logger and last_micro:  # the optimizer step's loss: the mean over its micro-batches
                self.logger.add_scalar("step/train_loss", float(np.mean(window)), self.step)
                self.logger.add_scalar("step/lr", self.optimizer.param_groups[0]["lr"], self.step)
            if last_micro:
                window = []
            bar.set_postfix(loss=f"{totals['train_loss'] / count:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        return {k: v / max(count, 1) for k, v in totals.items()}

    def validates_after(self, epoch: int) -> bool:
        """Whether the run validates after ``epoch`` (1-based): every ``train.val_every``-th epoch and
        the last, so that the last epoch always competes for best.pt."""
        return epoch % self.cfg.val_every == 0 or epoch >= self.epochs

    def _last_epoch_score(self) -> float:
        """The score of an epoch without validation (fold -1): each epoch better than the last."""
        return float(self.epoch) if self.higher_is_better else -float(self.epoch)

    def evaluation_model(self) -> torch.nn.Module:
        """The weights validation uses: the EMA model where ``train.ema`` is on."""
        return self.ema if self.ema else unwrap(self.model)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Predict the validation set on every process, gather, and score. In full precision, as
        OOF and inference predict, so that the validation score of the best epoch is its OOF score."""
        model = self.evaluation_model()
        model.eval()
        predictions = self.task.predict(model, self.val_loader(), self.device, self.ctx.main and self.cfg.progress)
        gathered = self.ctx.gather(predictions)
        return self.task.score(gathered)


LOGGERS = ("csv", "tensorboard")


def tensorboard_writer_class():
    """torch's ``SummaryWriter`` for ``train.logger=tensorboard``: event files in
    ``out_dir/tensorboard``, offline (``tensorboard --logdir OUT_DIR`` shows them), every scalar by
    optimizer step (the epoch's at its last step). ``fit`` opens it with ``purge_step`` the step
    after the checkpoint it starts from, so an interrupted epoch is not drawn twice."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("train.logger=tensorboard needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def plot_history(history: list[dict], path) -> None:
    """The learning curve: every logged loss and the validation score by epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(frame.epoch, frame.train_loss, marker="o", label="train loss")
    for column in (c for c in frame.columns if c.startswith("loss_")):  # the task's loss terms
        ax.plot(frame.epoch, frame[column], linewidth=1, alpha=0.7, label=column.replace("_", " ", 1))
    if "val_score" in frame:  # only the epochs that validated (train.val_every)
        validated = frame.dropna(subset=["val_score"])
        ax.plot(validated.epoch, validated.val_score, marker="o", label="validation score")
    ax.set_xlabel("epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
