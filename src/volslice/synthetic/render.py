"""Paint a sampled patient (``anatomy``) in HU, with its organ labels, on any grid.

The painter works through blocks of slices. Layers go from the outside in: the body wall, lungs
and heart; the hollow viscera; the solid organs; muscles, vessels, bones and the spine;
small-bowel loops and mesenteric vessels in whatever visceral fat is left; injuries; then scanner
noise. A voxel's organ label is set by the same test that sets its HU, so masks line up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

from volslice.synthetic.anatomy import (
    BOWEL, IMAGE_LEVEL_KINDS, LIVER, SPLEEN, VERTEBRA_MM, Anatomy, Phase)
from volslice.synthetic.shapes import Blob, Tube

AIR, FAT, FLUID = -1000.0, -95.0, 8.0
LOOP_LEVEL, LOOP_WALL = -0.25, 0.35  # small bowel where the bowel field exceeds LOOP_LEVEL; its wall the first LOOP_WALL
# tissue codes of Rendered.tissues (for measuring the HU of tissues the organ masks do not label)
OTHER_TISSUE, FAT_TISSUE, MUSCLE_TISSUE, VESSEL_TISSUE = 0, 1, 2, 3


@dataclass
class Rendered:
    """A rendered volume: HU, organ labels, and on which slices each image-level injury shows."""
    hu: np.ndarray  # (z, y, x) int16, z ascending
    organs: np.ndarray  # (z, y, x) uint8 organ labels
    visible: dict  # image-level injury name -> bool per slice
    tissues: np.ndarray  # (z, y, x) uint8: FAT_TISSUE, MUSCLE_TISSUE, VESSEL_TISSUE or OTHER_TISSUE


class Canvas:
    """A block of slices being painted: its coordinates, HU, labels and which voxels are taken
    (anything but the visceral fat that small-bowel loops may fill)."""

    def __init__(self, xs, ys, zs):
        self.xs, self.ys, self.zs = xs, ys, zs
        shape = (len(zs), len(ys), len(xs))
        self.hu = np.full(shape, AIR, np.float32)
        self.organs = np.zeros(shape, np.uint8)
        self.taken = np.ones(shape, bool)
        self.tissues = np.zeros(shape, np.uint8)
        self.x, self.y, self.z = xs[None, None, :], ys[None, :, None], zs[:, None, None]
        self.fields: dict[str, np.ndarray] = {}

    def box(self, low, high):
        """Index ranges of the block inside the box ``low``-``high`` (mm); None if it misses."""
        out = []
        for values, a, b in ((self.zs, low[2], high[2]), (self.ys, low[1], high[1]), (self.xs, low[0], high[0])):
            index = np.flatnonzero((values >= a) & (values <= b))
            if index.size == 0:
                return None
            out.append(slice(index[0], index[-1] + 1))
        return tuple(out)

    def coords(self, box):
        """x, y, z of the box (broadcastable) and its shape."""
        x, y, z = self.x[:, :, box[2]], self.y[:, box[1], :], self.z[box[0]]
        return x, y, z, (z.shape[0], y.shape[1], x.shape[2])

    def paint(self, box, mask, hu, label: int | None = 0, taken: bool = True, tissue: int = OTHER_TISSUE) -> None:
        """Set HU (a value or an array of the box's shape), the organ label (None: keep) and the
        tissue code where ``mask``."""
        region = self.hu[box]
        region[mask] = hu[mask] if isinstance(hu, np.ndarray) else hu
        if label is not None:
            self.organs[box][mask] = label
        self.taken[box][mask] = taken
        self.tissues[box][mask] = tissue

    def blob(self, shape: Blob):
        """(box, distance) of a blob where it meets the block, or (None, None)."""
        box = self.box(*shape.bbox())
        if box is None:
            return None, None
        x, y, z, _ = self.coords(box)
        return box, shape.distance(x, y, z)

    def tube(self, shape: Tube):
        """(box, distance ratio, arc length) of a tube where it meets the block, or (None, None, None)."""
        box = self.box(*shape.bbox())
        if box is None:
            return None, None, None
        x, y, z, size = self.coords(box)
        ratio, arc = shape.query(x, y, z, size)
        return box, ratio, arc

    def field(self, an: Anatomy, name: str, box):
        """The patient's field ``name`` over the box (sampled once per block)."""
        if name not in self.fields:
            self.fields[name] = an.fields[name].on_grid(self.xs, self.ys, self.zs)
        return self.fields[name][box]


def render(anatomy: Anatomy, phase: Phase, xs, ys, zs, rng, chunk: int = 16) -> Rendered:
    """Render HU, organ labels and per-slice lesion visibility on the grid xs, ys, zs (mm)."""
    n, h, w = len(zs), len(ys), len(xs)
    hu = np.empty((n, h, w), np.int16)
    organs = np.zeros((n, h, w), np.uint8)
    tissues = np.zeros((n, h, w), np.uint8)
    visible = {name: np.zeros(n, bool) for name in set(IMAGE_LEVEL_KINDS.values())}
    spacing = float(np.median(np.diff(zs))) if n > 1 else 3.0
    noise_sd = rng.uniform(9, 15) * float(np.clip(np.sqrt(3.0 / max(spacing, 0.5)), 0.7, 1.6))
    pixel_mm = float(abs(xs[1] - xs[0])) if w > 1 else 1.0
    for k0 in range(0, n, chunk):
        k1 = min(n, k0 + chunk)
        c = Canvas(xs, ys, zs[k0:k1])
        _paint_body(c, anatomy, phase)
        _paint_hollow(c, anatomy, phase)
        _paint_solid(c, anatomy, phase)
        _paint_retroperitoneum(c, anatomy, phase)
        _paint_small_bowel(c, anatomy, phase)
        for name, flags in _paint_lesions(c, anatomy, phase).items():
            visible[name][k0:k1] |= flags
        block = c.hu + _noise(rng, c.hu.shape, noise_sd, pixel_mm)
        hu[k0:k1] = np.clip(np.rint(block), -1024, 3071).astype(np.int16)
        organs[k0:k1] = c.organs
        tissues[k0:k1] = c.tissues
    return Rendered(hu, organs, visible, tissues)


def _noise(rng, shape, sd: float, pixel_mm: float) -> np.ndarray:
    """Scanner noise of ``sd`` HU as a soft-tissue reconstruction kernel leaves it: white noise
    blurred in-plane over about 1.5 mm (neighbours 3 mm apart correlate), plus slow shading."""
    coarse = rng.normal(0, 1, (shape[0], max(2, shape[1] // 8), max(2, shape[2] // 8))).astype(np.float32)
    shading = ndimage.zoom(coarse, (1, shape[1] / coarse.shape[1], shape[2] / coarse.shape[2]), order=1)
    sigma = 1.5 / pixel_mm
    white = rng.normal(0, 1, shape).astype(np.float32)
    grain = ndimage.gaussian_filter(white, (0, sigma, sigma)) if sigma > 0.3 else white
    grain *= sd / (grain.std() + 1e-6)
    return shading[:, : shape[1], : shape[2]] * 5.0 + grain


def _vessels(c: Canvas, an: Anatomy, box, width: float) -> np.ndarray:
    """Branching vessels: where two smooth random fields both cross zero (a curve in 3D, so a
    dot or a short segment in a slice, as vessels are; one field's zero set would be a sheet)."""
    return (np.abs(c.field(an, "vessels", box)) < width) & (np.abs(c.field(an, "fine", box)) < width)


def _muscle(c: Canvas, an: Anatomy, ph: Phase, box, mask) -> None:
    """Muscle HU with the patient's fatty infiltration (streaks of fat) where ``mask``."""
    streaks = c.field(an, "fine", box)
    hu = np.where(streaks > special.ndtri(1 - max(an.habitus.muscle_fat, 1e-3)), -70.0, ph.muscle)
    c.paint(box, mask, (hu + 5 * c.field(an, "texture", box)).astype(np.float32), tissue=MUSCLE_TISSUE)


def _paint_body(c: Canvas, an: Anatomy, ph: Phase) -> None:
    hb = an.habitus
    box = (slice(None), slice(None), slice(None))
    x, y, z, shape = c.coords(box)
    dx, dy, _ = an.outline(x, y, z)
    hips = 1 + 0.1 * np.clip((-z - 170) / 60, 0, 1)
    px, py = x + dx, y + dy
    depth_half = np.where(py > 0, hb.half_depth_back, hb.half_depth_front)
    p = hb.squareness
    r = ((np.abs(px) / (hb.half_width * hips)) ** p + (np.abs(py) / depth_half) ** p) ** (1 / p)
    rho = np.sqrt(px**2 + py**2)
    depth = np.where(r < 1, rho * (1 / np.maximum(r, 1e-6) - 1), -1.0)  # mm below the skin
    texture = c.field(an, "texture", box)
    fat_hu = FAT + 8 * texture
    inside = depth >= 0
    wall_top = 2 + hb.subcutaneous_fat
    cavity = depth > wall_top + hb.wall_muscle
    c.paint(box, inside, fat_hu, tissue=FAT_TISSUE)
    c.paint(box, inside & (depth < 2), 30.0)
    front = np.broadcast_to(y < an.spine_y - 5, shape)
    wall = inside & (depth >= wall_top) & ~cavity & front & ~((np.abs(x) < 5) & (y < 0)) & (z > -235)  # no linea alba
    _muscle(c, an, ph, box, wall)
    c.taken[box] = ~cavity  # the cavity's fat is free for the loops
    # ribs down to the costal margin, sloping down towards the front
    theta = np.abs(np.arctan2(x, -y))  # 0 in front, pi at the back
    dome = min(an.dome_z.values())
    lowest = np.interp(theta, [0, 0.6, 1.6, np.pi], [dome - 55, dome - 75, -75.0, -25.0])
    band = (depth > wall_top + hb.wall_muscle - 3) & (depth < wall_top + hb.wall_muscle + 5) & (z > lowest)
    phase_ = np.cos(2 * np.pi * (z - 40 * theta) / 30.0)
    rib = band & (phase_ > 0.7)
    c.paint(box, rib, np.where(theta < 0.45, 120.0, np.where(phase_ > 0.83, 300.0, 780.0)).astype(np.float32))
    # lung bases above the diaphragm, deepest at the back; the heart above the left dome
    side = np.where(x < 0, an.dome_z[-1], an.dome_z[1])
    diaphragm = side + 10 - 30 * ((np.abs(x) - 0.45 * hb.half_width) / (0.45 * hb.half_width)) ** 2 \
        - 70 * np.clip(y / hb.half_depth_back + 0.3, 0, 1)
    lung = cavity & (z > diaphragm) & ~((np.abs(x) < 28) & (y > an.spine_y - 40))
    vessels = _vessels(c, an, box, 0.2)
    c.paint(box, lung, np.where(vessels, -450.0, -860.0 + 15 * texture).astype(np.float32))
    hbox, d = c.blob(an.heart)
    if hbox is not None:
        over = (d < 1) & (lung[hbox] | ~c.taken[hbox])  # into the lungs and the cavity, not the wall
        c.paint(hbox, over, np.where(d < 0.8, ph.ivc, ph.muscle).astype(np.float32))


def _tube_wall_and_lumen(c: Canvas, tube: Tube, wall_mm: float):
    box, ratio, arc = c.tube(tube)
    if box is None:
        return None, None, None, None
    radius = np.interp(arc, tube.arc, tube.radii)
    inside = ratio < 1
    lumen = ratio < 1 - wall_mm / np.maximum(radius, wall_mm + 1)
    centre_y = np.interp(arc, tube.arc, tube.centerline[:, 1])
    y = c.coords(box)[1]
    height = (y - centre_y) / np.maximum(radius, 1)  # -1 at the front of the lumen, +1 at the back
    return box, inside, lumen, height


def _paint_hollow(c: Canvas, an: Anatomy, ph: Phase) -> None:
    # stomach: air at the front (the patient lies supine), fluid or food below
    box, inside, lumen, height = _tube_wall_and_lumen(c, an.stomach, 4.0)
    if box is not None:
        air = height < -0.35
        c.paint(box, inside, ph.bowel_wall)
        c.paint(box, lumen, np.where(air, AIR, an.content_hu["stomach"]).astype(np.float32))
    # colon: haustra, stool mottled with gas, an air-filled front
    box, inside, lumen, height = _tube_wall_and_lumen(c, an.colon, 3.0)
    if box is not None:
        content = c.field(an, "content", box)
        texture = c.field(an, "texture", box)
        stool = np.where(texture > 0.7, AIR, 15 + 30 * texture)
        hu = np.where((height < -0.2 + 0.5 * content) | (content > 1.2), AIR, stool)
        c.paint(box, inside, ph.bowel_wall, BOWEL)
        c.paint(box, lumen, hu.astype(np.float32), BOWEL)
    box, inside, lumen, height = _tube_wall_and_lumen(c, an.duodenum, 2.5)
    if box is not None:
        c.paint(box, inside, ph.bowel_wall, BOWEL)
        c.paint(box, lumen, np.where(height < -0.6, AIR, an.content_hu["bowel"]).astype(np.float32), BOWEL)
    box, d = c.blob(an.bladder)
    if box is not None:
        c.paint(box, d < 1, ph.muscle - 10)
        c.paint(box, d < 0.9, an.content_hu["bladder"])


def _paint_solid(c: Canvas, an: Anatomy, ph: Phase) -> None:
    liver_boxes = [c.blob(lobe) for lobe in an.liver_lobes]
    for box, d in liver_boxes:
        if box is None:
            continue
        vessels = _vessels(c, an, box, 0.28)
        vessel_hu = {"unenhanced": ph.liver - 14, "arterial": 0.5 * (ph.liver + ph.portal)}.get(ph.name, ph.portal)
        texture = c.field(an, "texture", box)
        c.paint(box, d < 1, np.where(vessels & (d < 0.9), vessel_hu, ph.liver + 5 * texture).astype(np.float32), LIVER)
    box, d = c.blob(an.gallbladder)
    if box is not None:
        c.paint(box, d < 1, ph.bowel_wall)
        c.paint(box, d < 0.85, FLUID)
    box, d = c.blob(an.spleen)
    if box is not None:
        texture = c.field(an, "texture", box)
        mottling = 25 * c.field(an, "content", box) if ph.name == "arterial" else 0.0
        c.paint(box, d < 1, (ph.spleen + 5 * texture + mottling).astype(np.float32), SPLEEN)
    for label, kidney in an.kidneys.items():
        box, d = c.blob(kidney)
        if box is None:
            continue
        texture = c.field(an, "texture", box)
        medulla = (d < 0.74) & (texture > -0.6)
        hu = np.where(medulla, ph.kidney_medulla, ph.kidney_cortex) + 5 * texture
        x, y, z, _ = c.coords(box)
        sinus = an.kidney_sinuses[label].distance(x, y, z)
        hu = np.where(sinus < 1, np.where(sinus < 0.45, FLUID, -80.0), hu)  # sinus fat around the collecting system
        c.paint(box, d < 1, hu.astype(np.float32), label)
    for adrenal in an.adrenals:
        box, ratio, _ = c.tube(adrenal)
        if box is not None:
            c.paint(box, ratio < 1, ph.adrenal)
    box, ratio, _ = c.tube(an.pancreas)
    if box is not None:
        lobules = c.field(an, "fine", box)
        inside = ratio < 1 + 0.12 * lobules
        c.paint(box, inside, np.where(lobules > 1.1, -60.0, ph.pancreas).astype(np.float32))


def _paint_spine(c: Canvas, an: Anatomy) -> None:
    box = c.box((-80, an.spine_y - 40, -182), (80, an.spine_y + 95, 500))
    if box is None:
        return
    x, y, z, shape = c.coords(box)
    level = z / VERTEBRA_MM
    within = level - np.floor(level)  # 0 at a disc's middle
    disc = (within < 4 / VERTEBRA_MM) | (within > 1 - 4 / VERTEBRA_MM)
    radius = 16 + 8 * np.clip(-z / 200, 0, 1)
    dy = y - an.spine_y
    body = ((x / (radius * 1.15)) ** 2 + (dy / radius) ** 2) ** 0.5
    texture = c.field(an, "texture", box)
    marrow = np.broadcast_to(220 + 40 * texture, shape)
    vertebra = np.where(body < 0.86, marrow, 760.0)
    c.paint(box, (body < 1) & ~disc, vertebra.astype(np.float32))
    c.paint(box, (body < 1) & disc, 85.0)
    canal_y = an.spine_y + radius + 10
    canal = np.sqrt(x**2 + (y - canal_y) ** 2)
    posterior = (canal >= 9) & (canal < 15) & (y > canal_y - 6)
    spinous = (np.abs(x) < 3) & (y > canal_y + 12) & (y < canal_y + 40) & (within > 0.35) & (within < 0.75)
    transverse = (np.abs(x) > radius) & (np.abs(x) < radius + 22) & (np.abs(y - canal_y + 8) < 3.5) \
        & (within > 0.4) & (within < 0.55) & (z < 0)
    c.paint(box, np.broadcast_to(posterior | spinous | transverse, shape) & ~disc, 650.0)
    c.paint(box, np.broadcast_to(canal < 9, shape), 20.0)


def _paint_retroperitoneum(c: Canvas, an: Anatomy, ph: Phase) -> None:
    for muscle in an.muscles:
        if isinstance(muscle, Tube):
            box, ratio, _ = c.tube(muscle)
            inside = ratio < 1 if box is not None else None
        else:
            box, d = c.blob(muscle)
            inside = d < 1 if box is not None else None
        if box is not None:
            _muscle(c, an, ph, box, inside & (c.hu[box] > -500) & (c.organs[box] == 0))  # organs and lungs stay
    # the aorta and the IVC (each list's first) run behind the liver and keep their lumen where an
    # organ's outline reaches them; the other vessels stop at organs; no vessel cuts into another
    for tubes, hu, trunk in ((an.arteries, ph.aortic_hu, True), (an.veins, ph.ivc, True),
                             (an.portal_veins, ph.portal, False)):
        for index, vessel in enumerate(tubes):
            box, ratio, _ = c.tube(vessel)
            if box is not None:
                through = (c.organs[box] == 0) | (trunk and index == 0)
                c.paint(box, (ratio < 1) & through & (c.tissues[box] != VESSEL_TISSUE), hu, tissue=VESSEL_TISSUE)
    for bone in an.bones:
        box, d = c.blob(bone)
        if box is not None:
            marrow = 230 + 40 * c.field(an, "texture", box)
            c.paint(box, d < 1, np.where(d < 0.8, marrow, 780.0).astype(np.float32))
    _paint_spine(c, an)


def _paint_small_bowel(c: Canvas, an: Anatomy, ph: Phase) -> None:
    """Loops packed in the mesentery: the level sets of a smooth random field where the visceral
    fat is free (wall, then content: fluid or oral contrast, with gas at the front), and mesenteric
    vessels in the fat left between them."""
    for region in an.small_bowel:
        box, d = c.blob(region)
        if box is None:
            continue
        free = (d < 1) & ~c.taken[box]
        if not free.any():
            continue
        level = c.field(an, "bowel", box)
        y = c.coords(box)[1]
        loop = free & (level > LOOP_LEVEL)
        lumen = free & (level > LOOP_LEVEL + LOOP_WALL)
        content = c.field(an, "content", box)
        gas = content - 0.4 * np.clip(y / 100.0, -1, 1) > 1.0
        c.paint(box, loop, ph.bowel_wall, BOWEL)
        c.paint(box, lumen, np.where(gas, AIR, an.content_hu["bowel"]).astype(np.float32), BOWEL)
        vessels = free & ~loop & _vessels(c, an, box, 0.25)
        c.paint(box, vessels, ph.portal)


def _paint_lesions(c: Canvas, an: Anatomy, ph: Phase) -> dict:
    visible = {name: np.zeros(len(c.zs), bool) for name in set(IMAGE_LEVEL_KINDS.values())}
    for lesion in an.lesions:
        if lesion.kind == "extravasation" and ph.name == "unenhanced":
            continue  # active extravasation is contrast leaving a vessel: nothing shows without contrast
        box, d = c.blob(lesion.shape)
        if box is None:
            continue
        mask = d < 1
        region, labels = c.hu[box], c.organs[box]
        if lesion.organ_label:
            mask &= labels == lesion.organ_label
        elif lesion.shell:
            mask &= labels == 0
            mask &= (region > -200) & (region < 200)
        else:
            mask &= region > -500  # stay inside the body
        hu = ph.aortic_hu * 0.92 if lesion.kind == "extravasation" else lesion.hu
        region[mask] = hu
        name = IMAGE_LEVEL_KINDS.get(lesion.kind)
        if name:
            visible[name][box[0]] |= mask.any(axis=(1, 2))
    return visible

