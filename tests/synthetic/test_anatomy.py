"""The synthetic anatomy: its shapes, where its organs lie, and that its masks label what is painted."""

import numpy as np
import pytest
from scipy import ndimage

from volslice.synthetic import anatomy as an
from volslice.synthetic.realism import synthetic_patient
from volslice.synthetic.render import FAT_TISSUE, MUSCLE_TISSUE, render
from volslice.synthetic.shapes import Blob, Deformation, Field, Tube, rotation

HEALTHY = {group: 0 for group in ("bowel", "extravasation", "kidney", "liver", "spleen")}


def test_blob_is_its_ellipsoid_with_bites_and_taper():
    x, y, z = np.meshgrid(np.linspace(-40, 40, 41), np.linspace(-30, 30, 31), np.linspace(-60, 60, 61), indexing="ij")
    plain = Blob(np.array([0.0, 0, 0]), np.array([20.0, 10, 30]))
    np.testing.assert_allclose(plain.distance(x, y, z), np.sqrt((x / 20) ** 2 + (y / 10) ** 2 + (z / 30) ** 2))
    turned = Blob(np.array([0.0, 0, 0]), np.array([20.0, 10, 30]), rotation(yaw=np.pi / 2))
    assert turned.distance(np.array(0.0), np.array(19.0), np.array(0.0)) < 1 < turned.distance(
        np.array(19.0), np.array(0.0), np.array(0.0))
    bitten = Blob(np.array([0.0, 0, 0]), np.array([20.0, 10, 30]), bites=[(np.array([20.0, 0, 0]), 8.0)])
    assert bitten.distance(np.array(15.0), np.array(0.0), np.array(0.0)) >= 1 > plain.distance(
        np.array(15.0), np.array(0.0), np.array(0.0))
    tapered = Blob(np.array([0.0, 0, 0]), np.array([20.0, 10, 30]), taper=0.5)
    top, bottom = (tapered.distance(x, y, z) < 1)[:, :, 37], (tapered.distance(x, y, z) < 1)[:, :, 23]  # z = +-14
    assert bottom.sum() < 0.7 * top.sum()
    bent = Blob(np.array([0.0, 0, 0]), np.array([20.0, 10, 30]), deformation=Deformation.sample(
        np.random.default_rng(0), 5.0))
    inside = bent.distance(x, y, z) < 1
    assert inside.sum() != (plain.distance(x, y, z) < 1).sum() and inside[20, 15, 30]


def test_tube_measures_distance_to_its_centreline_and_arc_length():
    tube = Tube([[0, 0, 0], [0, 0, 50], [0, 0, 100]], lambda s: 5 + s / 50)
    ratio, arc = tube.query(np.array([[3.0, 0.0]]), np.array([[0.0, 6.0]]), np.array([[50.0, 100.0]]), (1, 2))
    np.testing.assert_allclose(arc[0], [50, 100], atol=1.5)
    np.testing.assert_allclose(ratio[0], [3 / 6, 6 / 7], atol=0.03)
    far, _ = tube.query(np.array([[40.0]]), np.array([[0.0]]), np.array([[50.0]]), (1, 1))
    assert np.isinf(far).all()


def test_field_on_a_grid_is_its_trilinear_interpolation():
    field = Field(np.random.default_rng(0), [-100, -100, -100], [100, 100, 100], 6.0)
    xs, ys, zs = np.linspace(-90, 90, 37), np.linspace(-80, 95, 29), np.array([-50.0, 3.3, 40])
    grid = np.meshgrid(zs, ys, xs, indexing="ij")
    expected = ndimage.map_coordinates(field.grid, [(grid[2] + 100) / 4, (grid[1] + 100) / 4, (grid[0] + 100) / 4],
                                       order=1)
    np.testing.assert_allclose(field.on_grid(xs, ys, zs), expected, atol=1e-5)
    assert abs(field.grid.std() - 1) < 1e-3


@pytest.fixture(scope="module")
def patients():
    return [synthetic_patient(seed, phase) for seed, phase in ((0, "unenhanced"), (1, "portal_venous"),
                                                                (2, "arterial"))]


def test_every_organ_is_there_at_its_level_and_size(patients):
    voxel_ml = 27 / 1000  # 3 mm voxels
    for anatomy, rendered, zs in patients:
        volume = {label: (rendered.organs == label).sum() * voxel_ml for label in range(1, 6)}
        assert 900 < volume[an.LIVER] < 2600 and 80 < volume[an.SPLEEN] < 500, volume
        assert all(90 < volume[k] < 330 for k in (an.LEFT_KIDNEY, an.RIGHT_KIDNEY)), volume
        assert volume[an.BOWEL] > 400, volume
        height = {label: zs[np.flatnonzero((rendered.organs == label).any(axis=(1, 2)))].mean() for label in range(1, 6)}
        assert height[an.LIVER] > height[an.RIGHT_KIDNEY] and height[an.SPLEEN] > height[an.LEFT_KIDNEY]
        assert height[an.LEFT_KIDNEY] > height[an.RIGHT_KIDNEY]  # the liver pushes the right one down
        assert height[an.BOWEL] < height[an.LIVER]
        x = (rendered.organs == an.LIVER).nonzero()[2].mean()
        assert x < (rendered.organs == an.SPLEEN).nonzero()[2].mean()  # liver on the right, spleen on the left
        assert (rendered.tissues == FAT_TISSUE).sum() > 0 and (rendered.tissues == MUSCLE_TISSUE).sum() > 0


def test_organs_carry_their_phase_attenuation_under_their_labels(patients):
    """Inside each organ's eroded mask the HU is that organ's tissue in the series' phase: the label
    and the paint come from the same test."""
    for anatomy, rendered, _ in patients:
        for label, low, high in ((an.LIVER, 35, 135), (an.SPLEEN, 30, 140)):
            core = ndimage.binary_erosion(rendered.organs == label, iterations=2)
            assert low < np.median(rendered.hu[core]) < high
        kidneys = np.isin(rendered.organs, [an.LEFT_KIDNEY, an.RIGHT_KIDNEY])
        assert (rendered.hu[kidneys] < -40).mean() > 0.02  # the sinus fat is inside the kidney's label
    kidney = lambda r: np.median(r.hu[ndimage.binary_erosion(r.organs == an.LEFT_KIDNEY)])  # noqa: E731
    unenhanced, portal_venous = patients[0][1], patients[1][1]
    assert kidney(unenhanced) < 60 and kidney(portal_venous) > 100


def test_the_aorta_keeps_its_lumen_and_no_vessel_cuts_into_another(patients):
    """Along the aorta's centreline, from the diaphragm to its bifurcation, every voxel has the
    phase's aortic HU (noise aside) and no organ label, though the liver reaches the midline."""
    for anatomy, rendered, zs in patients:
        phase_hu = np.median([rendered.hu[k][pixel] for k, pixel in _centreline_pixels(anatomy, zs)])
        for k, (row, col) in _centreline_pixels(anatomy, zs):
            assert rendered.organs[k, row, col] == 0
            assert abs(int(rendered.hu[k, row, col]) - phase_hu) < 60


def _centreline_pixels(anatomy, zs):
    """(slice, (row, col)) of the aorta's centreline on the 3 mm grid of ``synthetic_patient``."""
    from volslice.synthetic.realism import GRID

    aorta = anatomy.arteries[0]
    low, high = aorta.centerline[-1, 2] + 10, min(anatomy.dome_z.values()) - 10
    out = []
    for k, z in enumerate(zs):
        if low < z < high:
            point = aorta.centerline[np.argmin(np.abs(aorta.centerline[:, 2] - z))]
            out.append((k, (int(np.argmin(np.abs(GRID + 20 - point[1]))), int(np.argmin(np.abs(GRID - point[0]))))))
    return out


def test_an_oblique_tube_finds_every_point_a_brute_force_search_finds():
    from scipy.spatial import cKDTree

    tube = Tube([[0, 0, 0], [60, 50, 40], [120, 60, 120]], 20.0)
    grid = np.meshgrid(np.arange(-30, 150, 3.0), np.arange(-30, 90, 3.0), np.arange(-30, 150, 3.0), indexing="ij")
    points = np.stack([g.ravel() for g in grid], axis=1)
    ratio, _ = tube.query(points[:, 0], points[:, 1], points[:, 2], (len(points),))
    distance, _ = cKDTree(tube.centerline).query(points)
    np.testing.assert_array_equal(ratio < 1, distance < 20.0)


def test_the_same_patient_on_two_grids_has_the_same_organs():
    rng = np.random.default_rng(4)
    anatomy = an.sample_anatomy(rng, HEALTHY)
    phase = an.sample_phase(rng, "portal_venous")
    zs = np.arange(-200, 40, 4.0)
    coarse = render(anatomy, phase, np.arange(-190, 190, 4.0), np.arange(-170, 210, 4.0), zs, np.random.default_rng(0))
    fine = render(anatomy, phase, np.arange(-190, 190, 2.0), np.arange(-170, 210, 2.0), zs, np.random.default_rng(1))
    for label in range(1, 6):
        a, b = (coarse.organs == label).sum() * 16, (fine.organs == label).sum() * 4
        assert abs(a - b) < 0.08 * b, (label, a, b)


def test_active_extravasation_shows_only_with_contrast():
    anatomy = an.sample_anatomy(np.random.default_rng(3), HEALTHY | {"extravasation": 1, "spleen": 2})
    axis, zs = np.arange(-190, 190, 4.0), np.arange(-220, 80, 4.0)
    for phase, shows in (("unenhanced", False), ("arterial", True), ("portal_venous", True)):
        rendered = render(anatomy, an.sample_phase(np.random.default_rng(0), phase), axis, axis + 20, zs,
                          np.random.default_rng(0))
        assert rendered.visible["Active_Extravasation"].any() == shows, phase
