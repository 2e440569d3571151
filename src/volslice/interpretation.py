"""Which slices drive each organ's prediction? Gradient x input slice importance, as a figure.

For every head, the importance of slice s is the sum over its pixels of |x * d p(injury) / dx|,
where p(injury) = 1 - p(healthy); each head's row is scaled to its maximum. The figure shows the
selected slices as a strip with one importance row per head under it, the predicted injury
probability beside each row, and the model's attention weights too when it pools by attention.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from volslice.data.cache import cache_series
from volslice.data.layout import series_folder
from volslice.dicom import read_series
from volslice.io import atomic_path
from volslice.predictor import Predictor
from volslice.runs import fold_folders
from volslice.training.classification import ClassificationTask


def slice_importance(model, x: torch.Tensor, task: ClassificationTask) -> tuple[dict, dict]:
    """(head -> (S,) importance, head -> injury probability) for one sample x of shape (1, S, C, H, W)."""
    importance, injury = {}, {}
    for head in task.heads:
        x = x.detach().clone().requires_grad_(True)
        probs = task.probabilities(model(x), keep_graph=True)[head]
        p_injury = 1 - probs[0, 0]
        (grad,) = torch.autograd.grad(p_injury, x)
        score = (grad * x).abs().sum(dim=(2, 3, 4))[0].detach().numpy()
        importance[head] = score / score.max() if score.max() > 0 else score
        injury[head] = float(p_injury.detach())
    return importance, injury


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


def explain(data, model_dir, patient_id: int, series_id: int | None = None, split: str = "train",
            out="slice_importance.png") -> dict:
    """Figure for one series of a patient with the first fold model of ``model_dir`` (a fold folder
    or a run folder), its input prepared by the Predictor as in inference. Returns the importance
    per head."""
    predictor = Predictor.load(fold_folders(model_dir)[0], torch.device("cpu"))
    model, cfg = predictor.models[0], predictor.cfg
    folder = series_folder(Path(data), split, patient_id, series_id)
    x, images = predictor.model_input(cache_series(read_series(folder), replace(cfg.cache, masks=False))[0])
    importance, injury = slice_importance(model, x, predictor.task)
    attention = None
    if cfg.model.pooling == "attention":
        with torch.no_grad():
            attention = model(x)["slice_weights"][0].numpy()
    plot_slice_importance(images[:, 0], importance, injury, out,
                          title=f"patient {patient_id}, series {folder.name} ({Path(predictor.folder).name})",
                          attention=attention)
    return importance
