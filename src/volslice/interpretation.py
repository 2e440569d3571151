"""Which slices, and where in them, drive each organ's prediction? Gradient x input, as a figure.

Saliency of a pixel is |x * d p(injury) / dx| summed over its channels, where p(injury) =
1 - p(healthy). Whole-slice models: the importance of slice s is the sum of its pixels' saliency,
each head's row scaled to its maximum; the figure shows the selected slices as a strip with one
importance row per head under it, the predicted injury probability beside each row, and the
model's attention weights too when it pools by attention. Organ-crop models: each head's row of
the figure is the crops it saw, with the in-plane saliency over them (scaled to the head's
maximum), so a reader sees where in the organ the model looked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from volslice.classifier.predictor import METHOD as CLASSIFIER, Predictor
from volslice.classifier.task import ClassificationTask
from volslice.data.cache import read_for_prediction
from volslice.data.inputs import organ_views
from volslice.io import atomic_path
from volslice.runs import fold_folders, run_config


def saliency(model, x: torch.Tensor, task: ClassificationTask) -> tuple[dict, dict]:
    """(name -> saliency of its input pixels, name -> its head's injury probability) for one sample
    x of shape (1, S, C, H, W) (per head, saliency (S, H, W)) or of organ crops
    (1, views, S, C, H, W) (per organ crop sequence, e.g. left_kidney, its head's saliency over it)."""
    maps, injury = {}, {}
    views = (organ_views([(h, task.specs[h].organs) for h in task.heads]) if x.ndim == 6 else
             [(head, head) for head in task.heads])
    for head in task.heads:
        x = x.detach().clone().requires_grad_(True)
        probs = task.probabilities(model(x), keep_graph=True)[head]
        p_injury = 1 - probs[0, 0]
        (grad,) = torch.autograd.grad(p_injury, x)
        pixels = (grad * x).abs()[0]
        for index, (view_head, name) in enumerate(views):
            if view_head == head:
                maps[name] = (pixels[index] if x.ndim == 6 else pixels).sum(dim=1).detach().numpy()
                injury[name] = float(p_injury.detach())
    return maps, injury


def _scaled(values: np.ndarray) -> np.ndarray:
    return values / values.max() if values.max() > 0 else values


def slice_importance(model, x: torch.Tensor, task: ClassificationTask) -> tuple[dict, dict]:
    """(head -> (S,) importance scaled to its maximum, head -> injury probability) for one sample
    x of shape (1, S, C, H, W)."""
    maps, injury = saliency(model, x, task)
    return {head: _scaled(m.sum(axis=(1, 2))) for head, m in maps.items()}, injury


def plot_crop_saliency(crops: np.ndarray, maps: dict, injury: dict, path, title: str = "") -> None:
    """One row per organ crop sequence: its crops (views, S, H, W) side by side with its head's
    saliency over them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads, n = len(maps), crops.shape[1]
    fig, axes = plt.subplots(heads, 1, figsize=(max(6, n * 0.9), 1.0 + 1.1 * heads), squeeze=False)
    for ax, (index, head) in zip(axes[:, 0], enumerate(maps)):
        ax.imshow(np.concatenate(list(crops[index]), axis=1), cmap="gray", vmin=0, vmax=255)
        heat = np.concatenate(list(_scaled(maps[head])), axis=1)
        ax.imshow(heat, cmap="magma", alpha=0.6 * np.sqrt(heat), vmin=0, vmax=1)
        ax.set_xticks((np.arange(n) + 0.5) * crops.shape[-1])
        ax.set_xticklabels([str(i) for i in range(n)], fontsize=7)
        ax.set_yticks([])
        ax.set_ylabel(f"{head}\np={injury[head]:.2f}", fontsize=8)
    axes[0, 0].set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("selected slice of the organ's z range (ascending z: feet to head)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_slice_importance(images: np.ndarray, importance: dict, injury: dict, path, title: str = "",
                          attention: np.ndarray | None = None) -> None:
    """The selected slices as a strip with one importance row per head under it, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = dict(importance)
    if attention is not None:
        rows["attention"] = attention / attention.max()
    n = len(images)
    fig = plt.figure(figsize=(max(8, n * 0.9), 1.2 + 0.9 + 0.45 * len(rows)))
    strip = fig.add_axes([0.16, 0.45, 0.82, 0.45])
    strip.imshow(np.concatenate(list(images), axis=1), cmap="gray", vmin=0, vmax=255)
    strip.set_xticks((np.arange(n) + 0.5) * images.shape[-1])
    strip.set_xticklabels([str(i) for i in range(n)], fontsize=7)
    strip.set_yticks([])
    strip.set_title(title, fontsize=9)
    heat = fig.add_axes([0.16, 0.05, 0.82, 0.32])
    heat.imshow(np.stack(list(rows.values())), aspect="auto", cmap="magma", vmin=0, vmax=1)
    heat.set_yticks(range(len(rows)))
    heat.set_yticklabels([f"{k} p={injury[k]:.2f}" if k in injury else k for k in rows], fontsize=8)
    heat.set_xticks(range(n))
    heat.set_xticklabels([str(i) for i in range(n)], fontsize=7)
    heat.set_xlabel("selected slice (ascending z: feet to head)", fontsize=8)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def chosen_series(tasks: list, patient_id: int, series_id: int | None, split: str):
    """The series ``series_id`` of ``patient_id`` among ``tasks`` (its first where None), or a
    one-line error naming what the split holds."""
    mine = sorted((t for t in tasks if t.patient_id == patient_id), key=lambda t: t.series_id)
    if series_id is not None:
        mine = [t for t in mine if t.series_id == series_id]
    if not mine:
        raise ValueError(f"no {split} series of patient {patient_id}" +
                         (f" with id {series_id}" if series_id is not None else "") +
                         f" in the data ({len(tasks)} {split} series found)")
    return mine[0]


def explain(data, model_dir, patient_id: int, series_id: int | None = None, split: str = "train",
            out="slice_importance.png") -> dict:
    """Figure for one series of a patient with the first fold model of ``model_dir`` (a fold folder
    or a run folder), its input prepared by the Predictor as in inference (organ crops with the
    run's segmenter). Returns per head the slice importance (S,), or for organ crops the
    saliency over its crops (S, H, W)."""
    method = run_config(model_dir).method
    if method != CLASSIFIER:
        raise ValueError(f"{model_dir} holds a {method or 'unrecorded'} run: interpret explains classifier runs")
    predictor = Predictor.load(fold_folders(model_dir)[0], torch.device("cpu"))
    model, cfg, comp = predictor.models[0], predictor.cfg, predictor.comp
    task = chosen_series(comp.find_series(Path(data), splits=(split,)), patient_id, series_id, split)
    read = read_for_prediction(task, [cfg.cache], pixel_fix=comp.pixel_fix)  # as inference reads it
    if read["error"]:
        raise ValueError(f"patient {patient_id} series {task.series_id}: {read['error']}")
    x, images = predictor.model_input(read["images"][0])
    centre = cfg.model.context * len(cfg.cache.windows)  # the picked slice's first window, not a neighbour
    title = f"patient {patient_id}, series {task.series_id} ({Path(predictor.folder).name})"
    if x.ndim == 6:
        maps, injury = saliency(model, x, predictor.task)
        plot_crop_saliency(images[:, :, centre], maps, injury, out, title)
        return maps
    importance, injury = slice_importance(model, x, predictor.task)
    attention = None
    if cfg.model.pooling == "attention":
        with torch.no_grad():
            attention = model(x)["slice_weights"][0].numpy()
    plot_slice_importance(images[:, centre], importance, injury, out, title=title, attention=attention)
    return importance
