"""Fresh synthetic sets for the robustness benchmarks: a data seed decides the set's shape, so
that a handful of seeds covers small and large sets, 112 and 128 px, shorter and longer scans, RLE
and JPEG 2000. The demo's own set (seed 0, configs/demo.yaml's shape) is never one of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common import volslice


@dataclass(frozen=True)
class SetShape:
    """The generator's flags that make one fresh set."""
    train_patients: int
    size: int
    slices: tuple[int, int]
    compression: str
    test_patients: int = 16

    def describe(self) -> str:
        """A short label for tables."""
        return (f"{self.train_patients}+{self.test_patients} pt, {self.size} px, "
                f"{self.slices[0]}-{self.slices[1]} sl, {self.compression}")


SHAPES = (SetShape(40, 112, (40, 80), "rle"), SetShape(56, 128, (32, 56), "j2k"), SetShape(64, 128, (64, 100), "rle"))


def shape_of(seed: int) -> SetShape:
    """The shape of the fresh set of data seed ``seed``."""
    if seed == 0:
        raise ValueError("seed 0 makes the demo's own set, on which the demo was tuned: use another")
    return SHAPES[seed % len(SHAPES)]


def generate_set(work: Path, seed: int, config: str) -> Path:
    """Write the fresh set of ``seed`` to ``work/data`` (a finished one is kept); returns it."""
    shape = shape_of(seed)
    volslice("synthetic", "--out", work / "data", "--config", config, "--seed", seed,
             "--train-patients", shape.train_patients, "--test-patients", shape.test_patients,
             "--size", shape.size, "--slices", *shape.slices, "--compression", shape.compression)
    return work / "data"


def prepare_set(work: Path, seed: int, config: str) -> None:
    """The fresh set of ``seed``, cached and folded as ``make demo`` does, under ``work``."""
    data = generate_set(work, seed, config)
    volslice("cache", "--data", data, "--out", work / "cache", "--config", config)
    volslice("folds", "--data", data, "--out", work / "folds.csv", "--config", config)
