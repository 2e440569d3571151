"""A small regression task for testing the training machinery (importable by torchrun workers)."""

import torch
from torch import nn
from torch.utils.data import TensorDataset


def toy_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = x.mean(dim=(1, 2, 3)) * 3 + 0.5
    return TensorDataset(x, y)


def toy_model(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(dropout), nn.Linear(4, 1))


class ToyTask:
    def __init__(self, crash_at_step=None):
        self.crash_at_step, self.calls = crash_at_step, 0

    def train_loss(self, model, batch, device):
        self.calls += 1
        if self.crash_at_step is not None and self.calls > self.crash_at_step:
            raise KeyboardInterrupt("simulated crash")
        x, y = (t.to(device) for t in batch)
        loss = ((model(x).squeeze(1).float() - y) ** 2).mean()
        return loss, {}

    def predict(self, model, loader, device, progress):
        errors = []
        for x, y in loader:
            errors.append(((model(x.to(device)).squeeze(1).float() - y.to(device)) ** 2).cpu())
        return torch.cat(errors).tolist()

    def score(self, predictions):
        flat = [e for part in predictions for e in part]
        return {"score": sum(flat) / len(flat)}
