"""Synthetic abdominal anatomy and injuries, sampled once per patient in world millimetres.

World coordinates are DICOM patient coordinates (LPS, millimetres): +x towards the patient's
left, +y posterior, +z towards the head; z = 0 is the T12/L1 disc. ``render`` (in ``render.py``)
paints a patient on any grid, so the two series of a patient show the same organs and injuries.

The body follows published adult anatomy, scaled by a sampled habitus (body size, subcutaneous
and visceral fat, muscle fat, organ size):
- a body outline flatter at the back, wider at the hips, with skin, subcutaneous fat, the
  abdominal wall muscles and oblique ribs down to the costal margin; lung bases in the
  posterior recesses above the diaphragm; the heart above the dome;
- the spine level by level (vertebral bodies with cortex and marrow, discs, canal, posterior
  elements), sacrum, iliac wings and femoral heads; paraspinal muscles, quadratus lumborum,
  psoas widening towards the pelvis;
- aorta (bifurcating at L4), IVC, iliac vessels, renal veins, the portal, splenic and superior
  mesenteric veins, and vessels inside liver and spleen;
- liver (right and left lobes), gallbladder, spleen with its hilum, kidneys with cortex, medulla,
  sinus fat and hilum, adrenal glands, a lobulated pancreas from head to tail;
- stomach (air anterior, fluid or food below), the duodenal C-loop around the pancreatic head,
  small bowel as loops packed in the mesentery with fat and vessels between them, the colon from
  caecum to rectum with haustra and stool, and the bladder in the pelvis.
Organ outlines are ellipsoids bent by smooth random displacements (``shapes``), never plain
ellipsoids. Masks label liver, spleen, the kidneys and bowel (small bowel, duodenum, colon);
stomach, pancreas, gallbladder and vessels are background, as in the competition's masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from volslice.synthetic.shapes import Blob, Deformation, Field, Tube, rotation

# Organ label values of the segmentation masks (as the competition's).
LIVER, SPLEEN, LEFT_KIDNEY, RIGHT_KIDNEY, BOWEL = 1, 2, 3, 4, 5
SOLID_ORGANS = {"liver": (LIVER,), "spleen": (SPLEEN,), "kidney": (LEFT_KIDNEY, RIGHT_KIDNEY)}
PHASES = ("unenhanced", "arterial", "portal_venous")
VERTEBRA_MM = 36.0  # a lumbar vertebral body and its disc; the T12/L1 disc is at z = 0


@dataclass
class Lesion:
    """One injury or finding to paint: its kind, shape and where it may show."""
    kind: str  # laceration | hematoma | extravasation | bowel_defect | free_air | free_fluid
    shape: Blob
    organ_label: int = 0  # restrict to this organ's mask (0: anywhere inside the body)
    hu: float | None = None  # None: derived from the phase (extravasation)
    shell: bool = False  # hematoma: only outside the organ


@dataclass
class Habitus:
    """The body's build: outline half-axes (mm), fat and muscle layers, fat inside the muscles."""
    half_width: float
    half_depth_front: float
    half_depth_back: float
    squareness: float  # exponent of the outline's superellipse (2: an ellipse)
    subcutaneous_fat: float
    wall_muscle: float
    muscle_fat: float  # share of a muscle's volume infiltrated by fat (older patients)
    oral_contrast: bool


@dataclass
class Anatomy:
    """One synthetic patient: habitus, organs, hollow viscera, vessels, bones, muscles, lesions."""
    habitus: Habitus
    outline: Deformation
    spine_y: float  # the vertebral bodies' centre, y
    dome_z: dict  # side (-1 right, +1 left) -> the diaphragm's dome
    liver_lobes: list  # Blob, the first the right lobe
    gallbladder: Blob
    spleen: Blob
    kidneys: dict  # label -> Blob
    kidney_sinuses: dict  # label -> Blob: the sinus fat and collecting system, open to the hilum
    adrenals: list  # Tube
    pancreas: Tube
    stomach: Tube
    duodenum: Tube
    colon: Tube
    small_bowel: list  # Blob regions the loops fill
    bladder: Blob
    heart: Blob
    arteries: list  # Tube: aorta, iliac and renal arteries, superior mesenteric artery
    veins: list  # Tube: IVC, iliac and renal veins
    portal_veins: list  # Tube: portal, splenic and superior mesenteric veins
    muscles: list  # Blob or Tube: erector spinae, quadratus lumborum, psoas, gluteal, obturator internus
    bones: list  # Blob: acetabula, iliac wings, femoral heads, sacrum
    fields: dict  # name -> Field: bowel (the loops' level sets), content (bowel content, spleen mottling),
    # vessels and fine (their joint zero crossings are vessels; fine alone: muscle fat, pancreas lobules), texture
    content_hu: dict  # hollow viscus -> content HU
    landmarks: dict = field(default_factory=dict)  # name -> z (mm): "L4" (its body's middle), "femoral heads"
    lesions: list = field(default_factory=list)

    @property
    def liver(self) -> Blob:
        return self.liver_lobes[0]

    @property
    def aorta_xy(self) -> tuple:
        return tuple(self.arteries[0].centerline[0, :2])

    def organ_shapes(self) -> dict[int, Blob]:
        """Mask label -> the main shape of each solid organ (the liver's right lobe)."""
        return {LIVER: self.liver, SPLEEN: self.spleen, **self.kidneys}

    def organ_z_range(self, label: int) -> tuple[float, float]:
        """(lowest, highest) z of a solid organ (all of the liver's lobes)."""
        shapes = self.liver_lobes if label == LIVER else [self.organ_shapes()[label]]
        spans = [z_span(shape) for shape in shapes]
        return min(s[0] for s in spans), max(s[1] for s in spans)

    @property
    def top_z(self) -> float:
        """Where the diaphragm's highest dome is."""
        return max(self.dome_z.values())


def z_span(blob: Blob) -> tuple[float, float]:
    """(lowest, highest) z the blob reaches (its rotated ellipsoid, without the deformation)."""
    half = float(np.sqrt(((blob.rotation[2] * blob.radii) ** 2).sum()))
    return blob.center[2] - half, blob.center[2] + half


@dataclass
class Phase:
    """The contrast phase's HU of the enhancing tissues."""
    name: str
    aortic_hu: float
    liver: float
    spleen: float
    kidney_cortex: float
    kidney_medulla: float
    ivc: float
    portal: float
    pancreas: float
    bowel_wall: float
    muscle: float
    adrenal: float


def sample_phase(rng, name: str) -> Phase:
    """HU of an unenhanced, arterial or portal-venous scan, drawn from ranges typical of abdominal
    CT (``rsna2023_atd.md``). The unenhanced ranges span the published values and lean towards
    those of a real unenhanced scan (liver 46, spleen 35, kidneys 13-23, aorta 44 HU in the
    abdomen-pelvis CT of TotalSegmentator's sources), which lie below the published ones."""
    u = rng.uniform
    muscle = u(40, 55)
    if name == "unenhanced":
        kidney = u(22, 36)
        return Phase(name, u(35, 50), u(45, 62), u(38, 50), kidney, kidney, u(35, 48), u(35, 48), u(30, 45),
                     u(30, 45), muscle, u(25, 40))
    if name == "arterial":
        return Phase(name, u(250, 400), u(65, 80), u(95, 120), u(170, 220), u(80, 100), u(70, 90), u(110, 150),
                     u(100, 130), u(70, 100), muscle + 5, u(50, 70))
    if name == "portal_venous":
        kidney = u(150, 200)
        return Phase(name, u(150, 200), u(100, 120), u(110, 130), kidney, kidney - 10, u(130, 160), u(160, 200),
                     u(90, 110), u(70, 90), muscle + 10, u(60, 80))
    raise ValueError(f"unknown contrast phase {name!r}: one of {', '.join(PHASES)}")


def _curve(points, radius, rng, jitter: float = 4.0) -> Tube:
    points = np.asarray(points, float)
    return Tube(points + rng.normal(0, jitter, points.shape), radius)


def sample_anatomy(rng, labels: dict) -> Anatomy:
    """Sample a patient's body and organs; ``labels`` maps group -> class index (0 healthy)."""
    u = rng.uniform
    organ = u(0.9, 1.1)  # organ size
    visceral = u(0, 1)  # visceral fat: how loosely the viscera sit
    cavity_x, cavity_y = (118 + 28 * visceral) * u(0.95, 1.05), (78 + 22 * visceral) * u(0.95, 1.05)
    squareness = u(2.0, 2.7)
    subcutaneous_fat = float(np.clip(u(4, 28) + 18 * visceral * u(0.3, 1.0), 4, 50))
    wall_muscle, muscle_fat = u(6, 11), float(np.clip(rng.normal(0.12, 0.1), 0.0, 0.45))
    oral_contrast = bool(rng.random() < 0.2)
    layers = subcutaneous_fat + wall_muscle + 2
    spine_y = cavity_y * u(0.45, 0.6)
    habitus = Habitus(half_width=cavity_x + layers, half_depth_front=cavity_y + layers,
                      half_depth_back=spine_y + 72 + subcutaneous_fat * 0.6, squareness=squareness,
                      subcutaneous_fat=subcutaneous_fat, wall_muscle=wall_muscle, muscle_fat=muscle_fat,
                      oral_contrast=oral_contrast)
    A, B, ys = cavity_x, cavity_y, spine_y
    dome_right = u(45, 70)
    dome = {-1: dome_right, 1: dome_right - u(5, 20)}

    def blob(center, radii, amplitude=6.0, **angles):
        return Blob(np.asarray(center, float), np.asarray(radii, float) * organ, rotation(**angles),
                    Deformation.sample(rng, amplitude))

    right_lobe = blob([-A + 78 * organ + u(-6, 6), 0.05 * B + u(-6, 6), dome[-1] - 66 * organ],
                      [78, 0.55 * B + 28, 70 * u(0.9, 1.15)], 8.0, yaw=u(-0.25, 0.05))
    right_lobe.taper = u(0.45, 0.65)  # the right lobe narrows to its tip beside the kidney
    left_lobe = blob([u(0, 25), -0.55 * B + u(-5, 5), dome[-1] - 40 + u(-8, 8)], [62 * u(0.7, 1.15), 30, 38],
                     6.0, yaw=u(-0.35, -0.05))
    gallbladder = blob([-0.32 * A + u(-8, 8), -0.45 * B + u(-5, 5), dome[-1] - 100 + u(-10, 10)], [14, 17, 34],
                       3.0, pitch=u(0.2, 0.6))
    spleen_center = np.array([0.68 * A + u(-6, 4), 0.4 * B + u(-6, 6), dome[1] - 58 + u(-10, 8)])
    spleen_yaw = u(0.5, 0.95)
    spleen = blob(spleen_center, [24 * u(0.8, 1.25), 52 * u(0.85, 1.2), 52 * u(0.8, 1.2)], 5.0, yaw=spleen_yaw)
    spleen.bites = [(spleen_center + np.array([-30, -22, 0.0]) * organ, 22 * organ)]
    kidney_z = {LEFT_KIDNEY: -50 + u(-10, 10), RIGHT_KIDNEY: 0.0}
    kidney_z[RIGHT_KIDNEY] = kidney_z[LEFT_KIDNEY] - u(8, 25)
    kidneys, sinuses = {}, {}
    for label, side in ((LEFT_KIDNEY, 1), (RIGHT_KIDNEY, -1)):
        center = np.array([side * (74 + u(-6, 8)), ys - 12 + u(-6, 6), kidney_z[label]])
        kidney = blob(center, [27 * u(0.9, 1.1), 23 * u(0.9, 1.1), 56 * u(0.88, 1.12)], 3.0,
                      yaw=side * u(0.35, 0.7), roll=-side * u(0.05, 0.25))
        hilum = center + np.array([-side * 24, -12, 0.0]) * organ
        kidney.bites = [(hilum, 14 * organ)]
        kidneys[label] = kidney
        sinuses[label] = Blob(center + (hilum - center) * 0.55, kidney.radii * np.array([0.42, 0.4, 0.55]),
                              kidney.rotation)
    adrenals = [_curve([[side * 40, ys - 14, kidney_z[label] + 62], [side * 48, ys - 6, kidney_z[label] + 48],
                        [side * 52, ys + 2, kidney_z[label] + 36]], 3.2, rng, 1.5)
                for label, side in ((LEFT_KIDNEY, 1), (RIGHT_KIDNEY, -1))]
    pancreas_z = kidney_z[LEFT_KIDNEY] + u(0, 15)
    pancreas = _curve([[-0.3 * A, ys - 48, pancreas_z - 30], [-0.1 * A, ys - 62, pancreas_z - 12],
                       [0.12 * A, ys - 58, pancreas_z], [0.34 * A, ys - 35, pancreas_z + 10],
                       spleen_center + np.array([-28, -8, -8])],
                      lambda s: np.interp(s, [0, 40, 120, 400], [19, 14, 11, 9]) * organ, rng, 3.0)
    fundus = np.array([0.4 * A, 0.1 * B, dome[1] - 18])
    distension = u(0.55, 1.05)
    stomach = _curve([fundus, [0.42 * A, -0.3 * B, dome[1] - 60], [0.15 * A, -0.6 * B, dome[1] - 95],
                      [-0.12 * A, -0.5 * B, dome[1] - 92], [-0.22 * A, -0.32 * B, dome[1] - 88]],
                     lambda s: np.interp(s, [0, 60, 160, 230, 400], [42, 36, 24, 14, 11]) * distension, rng, 4.0)
    pylorus = stomach.centerline[-1]
    duodenum = _curve([pylorus, [-0.36 * A, -0.15 * B, pylorus[2] - 8], [-0.38 * A, ys - 55, pancreas_z - 45],
                       [-0.3 * A, ys - 50, pancreas_z - 85], [0.0, ys - 50, pancreas_z - 95],
                       [0.2 * A, ys - 52, pancreas_z - 75], [0.18 * A, ys - 62, pancreas_z - 40]],
                      lambda s: np.full_like(s, u(10, 14)), rng, 3.0)
    sag = u(0, 70)
    colon = _curve([[-0.62 * A, -0.1 * B, -205], [-0.7 * A, 0.12 * B, -150], [-0.66 * A, 0.05 * B, -90],
                    [-0.55 * A, -0.35 * B, -65], [-0.2 * A, -0.75 * B, -95 - sag], [0.25 * A, -0.72 * B, -85 - sag],
                    [0.62 * A, -0.1 * B, dome[1] - 80], [0.72 * A, 0.25 * B, -100], [0.68 * A, 0.1 * B, -185],
                    [0.3 * A, -0.3 * B, -235], [-0.05 * A, -0.15 * B, -225], [0.0, ys + 10, -265],
                    [0.0, ys + 5, -320]],
                    lambda s: np.interp(s, [0, 60, 250, 600, 900, 1150, 2000], [30, 26, 23, 21, 17, 15, 20]) * u(0.85, 1.15)
                    * (1 + 0.16 * np.sin(2 * np.pi * s / u(32, 44))), rng, 6.0)
    small_bowel = [Blob(np.array([0.05 * A, -0.25 * B, -160.0]), np.array([0.78 * A, 0.62 * B, 95.0]),
                        deformation=Deformation.sample(rng, 10.0)),
                   Blob(np.array([0.35 * A, -0.35 * B, -75.0]), np.array([0.4 * A, 0.45 * B, 45.0]),
                        deformation=Deformation.sample(rng, 8.0))]
    bladder = blob([u(-8, 8), -0.3 * B, -285 + u(-8, 8)], np.array([48, 38, 38]) * u(0.6, 1.25), 4.0)
    heart = blob([18, -0.25 * B, dome[1] + 50], [65, 50, 55], 4.0)
    aorta_xy = np.array([u(8, 18), ys - 35 + u(-3, 3)])
    bifurcation = -125 + u(-12, 12)
    arteries = [
        _curve([[*aorta_xy, dome[-1] + 60], [*aorta_xy, 0], [aorta_xy[0] - 3, aorta_xy[1] - 4, bifurcation]],
               u(8.5, 12), rng, 1.5),
    ]
    for side in (-1, 1):
        arteries.append(_curve([[aorta_xy[0], aorta_xy[1] - 4, bifurcation + 5], [side * 35, ys - 25, -175],
                                [side * 62, ys - 40, -240], [side * 75, -0.35 * B, -300]], 5.5, rng, 2.0))
        kidney = kidneys[LEFT_KIDNEY if side == 1 else RIGHT_KIDNEY]
        arteries.append(_curve([[aorta_xy[0], aorta_xy[1], pancreas_z - 20],
                                kidney.center + np.array([-side * 22, -6, 0])], 3.0, rng, 1.5))
    arteries.append(_curve([[aorta_xy[0], aorta_xy[1] - 8, pancreas_z - 10], [aorta_xy[0] - 6, ys - 70, -90],
                            [0.0, -0.4 * B, -200]], 3.5, rng, 4.0))  # superior mesenteric artery
    ivc_xy = np.array([u(-28, -20), ys - 26])
    veins = [_curve([[*ivc_xy, dome[-1] + 40], [*ivc_xy, -60], [ivc_xy[0] + 6, ivc_xy[1], -150]],
                    lambda s: np.full_like(s, u(10, 13)), rng, 1.5)]
    for side in (-1, 1):
        veins.append(_curve([[ivc_xy[0] + 6, ivc_xy[1] + 2, -145], [side * 38, ys - 18, -185],
                             [side * 66, ys - 30, -245], [side * 78, -0.3 * B, -300]], 7.0, rng, 2.0))
        kidney = kidneys[LEFT_KIDNEY if side == 1 else RIGHT_KIDNEY]
        hilum = kidney.center + np.array([-side * 22, -12, 0])
        # the left renal vein crosses in front of the aorta to the IVC; the right one is short
        middle = [aorta_xy[0], aorta_xy[1] - 18, kidney.center[2] + 6] if side == 1 else (hilum + [*ivc_xy, hilum[2]]) / 2
        veins.append(_curve([hilum, middle, [*ivc_xy, kidney.center[2] + 10]], 5.0, rng, 1.5))
    confluence = np.array([-0.02 * A, ys - 58, pancreas_z - 10])
    portal_veins = [
        _curve([confluence, [-0.2 * A, -0.1 * B, dome[-1] - 95], [-0.3 * A, 0.0, dome[-1] - 80]], 7.5, rng, 2.0),
        _curve([spleen_center + np.array([-26, -12, -5]), [0.25 * A, ys - 58, pancreas_z + 2], confluence],
               5.0, rng, 2.0),
        _curve([confluence, [-0.08 * A, ys - 75, -100], [-0.05 * A, -0.45 * B, -200]], 5.5, rng, 4.0),
    ]
    muscles, bones = [], []
    femoral_z = -288 + u(-6, 6)
    for side in (-1, 1):
        muscles.append(Blob(np.array([side * 34, ys + 46, -80.0]), np.array([32, 24, 330.0]),
                            deformation=Deformation.sample(rng, 4.0)))  # erector spinae
        muscles.append(Blob(np.array([side * 62, ys + 24, -85.0]), np.array([16, 11, 65.0]),
                            rotation(yaw=side * 0.4), Deformation.sample(rng, 3.0)))  # quadratus lumborum
        muscles.append(_curve([[side * 24, ys + 2, 10], [side * 42, ys - 4, -80], [side * 55, ys - 18, -170],
                               [side * 72, ys - 45, -250], [side * 82, -0.3 * B, -300]],
                              lambda s: np.interp(s, [0, 60, 150, 260, 400], [5, 14, 21, 24, 17]), rng, 2.0))
        muscles.append(Blob(np.array([side * 85, ys + 62, -262.0]), np.array([62, 36, 70.0]),
                            rotation(yaw=side * 0.45), Deformation.sample(rng, 5.0)))  # gluteus maximus
        muscles.append(Blob(np.array([side * 112, ys + 10, -205.0]), np.array([22, 55, 45.0]),
                            rotation(yaw=-side * 0.5), Deformation.sample(rng, 4.0)))  # gluteus medius
        muscles.append(Blob(np.array([side * 62, ys - 18, -280.0]), np.array([14, 30, 35.0]),
                            deformation=Deformation.sample(rng, 3.0)))  # obturator internus
        bones.append(Blob(np.array([side * 86, ys - 18, -290.0]), np.array([34, 34, 30.0]),
                          deformation=Deformation.sample(rng, 2.0)))  # acetabulum (the head painted over it)
        bones.append(Blob(np.array([side * 92, ys + 8, -190.0]), np.array([12, 62, 48.0]),
                          rotation(yaw=-side * 0.55), Deformation.sample(rng, 3.0)))  # iliac wing
        bones.append(Blob(np.array([side * 88, ys - 20, femoral_z]), np.array([23, 23, 23.0])))  # femoral head
    bones.append(Blob(np.array([0.0, ys + 22, -212.0]), np.array([46, 22, 42.0]), rotation(pitch=-0.5),
                      Deformation.sample(rng, 2.0)))  # sacrum
    low, high = np.array([-235.0, -205.0, -360.0]), np.array([235.0, 205.0, 170.0])
    fields = {name: Field(rng, low, high, sigma) for name, sigma in
              (("bowel", u(5.5, 7.5)), ("content", 14.0), ("vessels", 4.0), ("texture", 3.0), ("fine", 2.5))}
    content_hu = {"stomach": float(rng.choice([10.0, 35.0, 300.0], p=[0.6, 0.3, 0.1])),
                  "bowel": 300.0 if habitus.oral_contrast else u(5, 25), "bladder": u(2, 15)}
    anatomy = Anatomy(habitus=habitus, outline=Deformation.sample(rng, 4.0, (120.0, 260.0)), spine_y=ys,
                      dome_z=dome, liver_lobes=[right_lobe, left_lobe], gallbladder=gallbladder, spleen=spleen,
                      kidneys=kidneys, kidney_sinuses=sinuses, adrenals=adrenals, pancreas=pancreas, stomach=stomach, duodenum=duodenum,
                      colon=colon, small_bowel=small_bowel, bladder=bladder, heart=heart, arteries=arteries,
                      veins=veins, portal_veins=portal_veins, muscles=muscles, bones=bones, fields=fields,
                      content_hu=content_hu, landmarks={"L4": -3.5 * VERTEBRA_MM, "femoral heads": femoral_z})
    anatomy.lesions = _sample_injuries(rng, anatomy, labels)
    return anatomy


def _point_inside(rng, shape: Blob, depth: float = 0.6) -> np.ndarray:
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return shape.center + shape.rotation @ (direction * shape.radii * rng.uniform(0, depth))


def _sample_injuries(rng, anatomy: Anatomy, labels: dict) -> list[Lesion]:
    lesions: list[Lesion] = []
    injured_organs = []
    for group, organ_labels in SOLID_ORGANS.items():
        grade = labels[group]
        if grade == 0:
            continue
        for organ_label in ([rng.choice(organ_labels)] if len(organ_labels) > 1 else organ_labels):
            organ = anatomy.organ_shapes()[organ_label]
            injured_organs.append(organ_label)
            n_cuts = 1 if grade == 1 else rng.integers(2, 4)
            for _ in range(n_cuts):
                length = organ.radii.max() * (rng.uniform(0.35, 0.5) if grade == 1 else rng.uniform(0.8, 1.2))
                width = rng.uniform(3.5, 4.5) if grade == 1 else rng.uniform(4.5, 6.5)
                cut = Blob(_point_inside(rng, organ, 0.4), np.array([length, width, organ.radii[2] * rng.uniform(0.3, 0.6)]),
                           rotation(yaw=rng.uniform(0, np.pi)))
                lesions.append(Lesion("laceration", cut, organ_label, hu=rng.uniform(25, 45)))
            if grade == 2:
                hematoma = organ.grown(rng.uniform(8, 15))
                lesions.append(Lesion("hematoma", hematoma, 0, hu=rng.uniform(50, 70), shell=True))
    if labels["extravasation"]:
        for _ in range(rng.integers(1, 4)):
            if injured_organs:
                center = _point_inside(rng, anatomy.organ_shapes()[rng.choice(injured_organs)], 0.7)
            else:  # retroperitoneal / pelvic bleed near the aorta
                ax, ay = anatomy.aorta_xy
                center = np.array([ax + rng.uniform(-40, 40), ay + rng.uniform(-30, 10), rng.uniform(-200, -60)])
            radius = rng.uniform(4.5, 7.5)
            lesions.append(Lesion("hematoma", Blob(center, np.full(3, radius * 2.2)), 0, hu=rng.uniform(50, 70)))
            lesions.append(Lesion("extravasation", Blob(center, np.array([radius, radius * 0.8, radius * 1.2]))))
    if labels["bowel"]:
        tube = anatomy.colon if rng.random() < 0.6 else anatomy.duodenum
        k = int(rng.integers(len(tube.arc) // 8, len(tube.arc) * 7 // 8))
        tangent = tube.centerline[min(k + 1, len(tube.arc) - 1)] - tube.centerline[max(k - 1, 0)]
        outward = np.cross(tangent, rng.normal(size=3))
        outward /= np.linalg.norm(outward) + 1e-9
        wall_point = tube.centerline[k] + outward * tube.radii[k]
        lesions.append(Lesion("bowel_defect", Blob(wall_point, np.full(3, rng.uniform(5, 7))), 0, hu=15.0))
        lesions.append(Lesion("free_fluid", Blob(wall_point + outward * 12, np.array([14.0, 10.0, 14.0])), 0, hu=15.0))
        for _ in range(rng.integers(3, 7)):  # free air rises anteriorly (towards -y)
            bubble = tube.centerline[k] + np.array([rng.uniform(-40, 40), -rng.uniform(25, 60), rng.uniform(-30, 30)])
            lesions.append(Lesion("free_air", Blob(bubble, np.full(3, rng.uniform(4, 7))), 0, hu=-1000.0))
    return lesions


# Lesion kinds that make a slice positive in image_level_labels.csv.
IMAGE_LEVEL_KINDS = {"extravasation": "Active_Extravasation", "bowel_defect": "Bowel", "free_air": "Bowel", "free_fluid": "Bowel"}
