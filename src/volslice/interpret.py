"""Which slices drive each organ's prediction? Gradient x input slice importance, as a figure.

    python -m volslice.interpret --data ROOT --model RUN_DIR/fold0 --patient ID [--series ID]
        [--split train|test] [--out slice_importance.png]

For every head, the importance of slice s is the sum over its pixels of |x * d p(injury) / dx|,
where p(injury) = 1 - p(healthy); each head's row is scaled to its maximum. The figure shows the
selected slices as a strip with one importance row per head under it, the predicted injury
probability beside each row, and the model's attention weights too when it pools by attention.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from volslice import competitions
from volslice.inference import load_model_group, model_input, series_folder
from volslice.io import atomic_path
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
    or a run folder). Returns the importance per head."""
    model_dir = Path(model_dir)
    run_dir, fold = (model_dir.parent, model_dir.name) if model_dir.name.startswith("fold") else (model_dir, None)
    group = load_model_group(run_dir, torch.device("cpu"), folds=[fold] if fold else None)
    model = group.models[0]
    cfg = group.cfg
    folder = series_folder(Path(data), split, patient_id, series_id)
    x, images = model_input(folder, cfg, torch.device("cpu"))
    comp = competitions.get(cfg.competition)
    task = ClassificationTask(comp, cfg.model.heads, cfg.train)
    importance, injury = slice_importance(model, x, task)
    attention = None
    if cfg.model.pooling == "attention":
        with torch.no_grad():
            attention = model(x)["slice_weights"][0].numpy()
    plot_slice_importance(images[:, 0], importance, injury, out,
                          title=f"patient {patient_id}, series {folder.name} ({run_dir.name}/{fold or 'fold0'})",
                          attention=attention)
    return importance


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="a run folder or one of its fold folders")
    parser.add_argument("--patient", type=int, required=True)
    parser.add_argument("--series", type=int)
    parser.add_argument("--split", default="train", choices=["train", "test"])
    parser.add_argument("--out", type=Path, default=Path("slice_importance.png"))
    args = parser.parse_args(argv)
    importance = explain(args.data, args.model, args.patient, args.series, args.split, args.out)
    for head, values in importance.items():
        top = np.argsort(values)[::-1][:3]
        print(f"{head:<14} most important slices {top.tolist()}")
    print(f"figure written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
