"""Synthetic head CT: skull, scalp, grey and white matter, sulci, lateral ventricles, and the five
intracranial haemorrhage types where they occur (RSNA 2019's labels).

Shapes live in patient millimetres (x left-right, y front-back, z up), so the rendering does not
depend on the pixel size. Each haemorrhage is a boolean region; a slice is labelled with a type
where that type covers at least ``MIN_VISIBLE_MM2`` of the slice (so labels follow what shows).

- epidural: a biconvex lens against the inner skull table, short and thick;
- subdural: a crescent along the inner table over a wide arc, thin and long;
- subarachnoid: blood filling the sulci of one region;
- intraparenchymal: a blob in the brain substance, with a rim of oedema;
- intraventricular: blood layering in the back of a lateral ventricle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HAEMORRHAGES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
MIN_VISIBLE_MM2 = 6.0
HU = {"air": -1000.0, "scalp": 30.0, "bone": 1200.0, "csf": 6.0, "grey": 40.0, "white": 28.0,
      "oedema": 18.0}
# Study-level probability of each type ("balanced": a learnable share; "real": about the real rates).
PREVALENCE = {"balanced": {"epidural": 0.12, "intraparenchymal": 0.25, "intraventricular": 0.18,
                           "subarachnoid": 0.22, "subdural": 0.25},
              "real": {"epidural": 0.02, "intraparenchymal": 0.12, "intraventricular": 0.08,
                       "subarachnoid": 0.12, "subdural": 0.14}}


@dataclass
class Head:
    """One head's anatomy (mm) and its haemorrhages (type -> parameters)."""
    radii: np.ndarray  # outer skull ellipsoid (x, y, z)
    skull: float  # skull thickness
    scalp: float
    centre_z: float
    ventricle_dx: float
    ventricle_radii: np.ndarray
    sulci: int  # number of sulci around the circumference
    bleeds: dict = field(default_factory=dict)


def sample_head(rng, prevalence: str = "balanced") -> Head:
    """A random head and its haemorrhages."""
    head = Head(radii=np.array([rng.uniform(68, 78), rng.uniform(86, 98), rng.uniform(70, 80)]),
                skull=rng.uniform(5, 8), scalp=rng.uniform(4, 7), centre_z=0.0,
                ventricle_dx=rng.uniform(9, 13), ventricle_radii=np.array([rng.uniform(5, 8), rng.uniform(22, 30),
                                                                          rng.uniform(10, 15)]),
                sulci=int(rng.integers(18, 30)))
    for kind, p in PREVALENCE[prevalence].items():
        if rng.random() < p:
            head.bleeds[kind] = {"angle": rng.uniform(0, 2 * np.pi), "z": rng.uniform(-30, 40),
                                 "size": rng.uniform(0.6, 1.0), "side": rng.choice([-1.0, 1.0]),
                                 "hu": rng.uniform(60, 85)}
    return head


def _inner_distance(head: Head, x, y, z):
    """Normalised radius in the inner skull ellipsoid (1 on the inner table)."""
    inner = head.radii - head.skull
    return np.sqrt((x / inner[0]) ** 2 + (y / inner[1]) ** 2 + ((z - head.centre_z) / inner[2]) ** 2)


def _bleed_regions(head: Head, x, y, z, r_inner, brain, ventricles, sulci) -> dict:
    """Type -> boolean region of each haemorrhage on the grid."""
    regions = {}
    angle = np.arctan2(y, x)
    inner_mm = float(np.mean(head.radii[:2] - head.skull))
    for kind, b in head.bleeds.items():
        arc = np.abs(np.angle(np.exp(1j * (angle - b["angle"]))))  # angular distance, radians
        dz = z - b["z"]
        if kind == "epidural":  # lens: thickest at its centre, against the table
            depth = 14 * b["size"] * np.clip(1 - (arc / 0.45) ** 2 - (dz / 28) ** 2, 0, None)
            regions[kind] = (r_inner < 1) & (r_inner > 1 - depth / inner_mm)
        elif kind == "subdural":  # crescent: thin, over a wide arc and tall
            depth = 7 * b["size"] * np.clip(1 - (arc / 1.3) ** 2 - (dz / 45) ** 2, 0, None)
            regions[kind] = (r_inner < 1) & (r_inner > 1 - depth / inner_mm)
        elif kind == "subarachnoid":  # the sulci of one region fill with blood
            regions[kind] = sulci & (arc < 0.9 * b["size"]) & (np.abs(dz) < 30)
        elif kind == "intraparenchymal":
            cx, cy = 0.45 * inner_mm * np.cos(b["angle"]), 0.45 * inner_mm * np.sin(b["angle"])
            r = 7 + 11 * b["size"]
            regions[kind] = (((x - cx) ** 2 + (y - cy) ** 2 + (dz / 0.8) ** 2) < r ** 2) & brain
        elif kind == "intraventricular":  # layers in the dependent (back) part of one ventricle
            side = (x * b["side"]) > 0
            regions[kind] = ventricles & side & (y > head.ventricle_radii[1] * (0.55 - 0.5 * b["size"]))
    return regions


def render(head: Head, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, rng, noise_hu: float = 4.0):
    """(HU volume (z, y, x) float32, labels {type: bool per slice}) of ``head`` on the grid."""
    z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")
    r_outer = np.sqrt((x / head.radii[0]) ** 2 + (y / head.radii[1]) ** 2 + ((z - head.centre_z) / head.radii[2]) ** 2)
    r_scalp = np.sqrt((x / (head.radii[0] + head.scalp)) ** 2 + (y / (head.radii[1] + head.scalp)) ** 2
                      + ((z - head.centre_z) / (head.radii[2] + head.scalp)) ** 2)
    r_inner = _inner_distance(head, x, y, z)
    hu = np.full(x.shape, HU["air"], np.float32)
    hu[r_scalp < 1] = HU["scalp"]
    hu[r_outer < 1] = HU["bone"]
    inside = r_inner < 1
    angle = np.arctan2(y, x)
    folds = np.sin(head.sulci * angle + 0.08 * z) * np.sin(0.25 * z)
    sulci = inside & (r_inner > 0.86) & (folds > 0.75)
    white = inside & (r_inner < 0.78 + 0.04 * np.sin(head.sulci * angle))
    vx, vr = head.ventricle_dx, head.ventricle_radii
    ventricles = np.zeros_like(inside)
    for side in (-1, 1):
        ventricles |= (((x - side * vx) / vr[0]) ** 2 + ((y + 5) / vr[1]) ** 2 + ((z - 10) / vr[2]) ** 2) < 1
    brain = inside & ~ventricles & ~sulci
    hu[inside] = HU["grey"]
    hu[white] = HU["white"]
    hu[sulci | (inside & (r_inner > 0.97))] = HU["csf"]
    hu[ventricles] = HU["csf"]
    regions = _bleed_regions(head, x, y, z, r_inner, brain, ventricles, sulci)
    pixel_mm2 = abs(float(xs[1] - xs[0]) * float(ys[1] - ys[0]))
    labels = {}
    for kind in HAEMORRHAGES:
        region = regions.get(kind)
        if region is None:
            labels[kind] = np.zeros(len(zs), bool)
            continue
        if kind == "intraparenchymal":
            r = 7 + 11 * head.bleeds[kind]["size"]
            rim = _grow(region, max(1, int(round(3 / np.sqrt(pixel_mm2))))) & brain & ~region
            hu[rim & (r > 10)] = HU["oedema"]
        hu[region] = head.bleeds[kind]["hu"]
        labels[kind] = region.sum(axis=(1, 2)) * pixel_mm2 >= MIN_VISIBLE_MM2
    hu += rng.normal(0, noise_hu, hu.shape).astype(np.float32)
    return hu, labels


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` dilated in-plane by ``pixels`` (a square)."""
    from scipy import ndimage

    return ndimage.binary_dilation(mask, structure=np.ones((1, 2 * pixels + 1, 2 * pixels + 1), bool))
