"""The VoCo pretext as a training-engine task: crops -> student and teacher projections -> the
position (intra-volume), inter-volume and base-crop regularisation losses, each weighted and logged.
"""

from __future__ import annotations

import torch

from volslice.config import PretrainConfig
from volslice.pretraining.voco import position_loss, regularisation_loss, voco_logits
from volslice.data.tensors import intensity_jitter, to_float
from volslice.engine import ema_update, unwrap


def voco_losses(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, n_bases: int) -> dict:
    """student, teacher: (batch, bases + randoms, dim); labels: (batch, randoms, bases).

    position: each random crop's similarity to the bases, student against teacher in both
    directions (averaged), towards the overlap labels. inter: the student's assignment of volume
    i's random crops to volume i+1's bases, towards the teacher's (detached). regularisation:
    the student's base crops kept apart."""
    student, teacher = student.float(), teacher.float()
    position, inter, regular = [], [], []
    batch = len(student)
    for i in range(batch):
        s_bases, s_randoms = student[i, :n_bases], student[i, n_bases:]
        t_bases, t_randoms = teacher[i, :n_bases], teacher[i, n_bases:]
        position.append((position_loss(voco_logits(s_randoms, t_bases), labels[i])
                         + position_loss(voco_logits(t_randoms, s_bases), labels[i])) / 2)
        regular.append(regularisation_loss(s_bases))
        if batch > 1:
            j = (i + 1) % batch
            target = voco_logits(t_randoms, teacher[j, :n_bases]).detach()
            inter.append(position_loss(voco_logits(s_randoms, teacher[j, :n_bases]), target))
    zero = student.new_zeros(())
    return {"position": torch.stack(position).mean(), "inter": torch.stack(inter).mean() if inter else zero,
            "regularisation": torch.stack(regular).mean()}


class VoCoTask:
    """The 2D-VoCo pretext as a Trainer task: position, inter-volume and regularisation losses
    on student/teacher crop features; the teacher follows the student after every step."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        self.n_bases = cfg.grid * cfg.grid
        self.weights = {"position": cfg.position_weight, "inter": cfg.inter_weight,
                        "regularisation": cfg.regularisation_weight}

    def train_loss(self, model, batch, device):
        """The weighted sum of the three VoCo losses for a batch of volumes' crops, each logged."""
        crops = intensity_jitter(to_float(batch["crops"], device), self.cfg.train.intensity)
        student, teacher = model(crops)
        losses = voco_losses(student, teacher, batch["labels"].to(device), self.n_bases)
        total = sum(self.weights[k] * v for k, v in losses.items())
        return total, {f"loss_{k}": float(v.detach()) for k, v in losses.items()}

    def after_step(self, model) -> None:
        """Move the teacher towards the student (EMA with ``pretrain.momentum``)."""
        voco = unwrap(model)
        ema_update(voco.teacher, voco.student, self.cfg.momentum)

    @torch.no_grad()
    def predict(self, model, loader, device, progress: bool = False) -> list[dict]:
        """Per validation batch: its losses on fixed crops (no jitter)."""
        rows = []
        for batch in loader:
            student, teacher = model(to_float(batch["crops"], device))
            losses = voco_losses(student, teacher, batch["labels"].to(device), self.n_bases)
            rows.append({"volumes": len(student), **{k: float(v) for k, v in losses.items()}})
        return rows

    def score(self, predictions: list) -> dict:
        """The position loss (lower is better) and the other losses, averaged over volumes."""
        rows = [row for part in predictions for row in part]
        volumes = sum(r["volumes"] for r in rows)
        metrics = {k: sum(r[k] * r["volumes"] for r in rows) / volumes for k in ("position", "inter", "regularisation")}
        return {"score": metrics["position"], **metrics}
