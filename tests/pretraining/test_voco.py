import numpy as np
import pytest
import torch
from torch import nn

from volslice.pretraining.data import corner_labels, crop_corners
from volslice.engine import ema_update
from volslice.pretraining.voco import (
    base_crop_boxes,
    overlap_labels,
    position_loss,
    regularisation_loss,
    voco_logits,
)


def test_base_crops_tile_the_plane():
    boxes = base_crop_boxes(3)
    assert boxes.shape == (9, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert areas.sum() == pytest.approx(1.0)


def test_overlap_labels_by_hand():
    bases = base_crop_boxes(2)  # quadrants: TL, TR, BL, BR
    centred = np.array([[0.25, 0.25, 0.75, 0.75]])  # a quarter in each quadrant
    np.testing.assert_allclose(overlap_labels(centred, bases), [[0.25, 0.25, 0.25, 0.25]])
    shifted = np.array([[0.0, 0.25, 0.5, 0.75]])  # half in TL, half in BL
    np.testing.assert_allclose(overlap_labels(shifted, bases), [[0.5, 0.0, 0.5, 0.0]])
    exact = bases[[3]]
    np.testing.assert_allclose(overlap_labels(exact, bases), [[0, 0, 0, 1]])


def test_labels_sum_to_one_on_a_tiling_grid_and_are_zero_when_disjoint():
    rng = np.random.default_rng(0)
    for n in (2, 3, 4):
        corners = crop_corners(60, n, 50, rng)
        labels = corner_labels(corners, 60 // n, 60, n)
        assert labels.shape == (50, n * n)
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
        assert (labels >= 0).all() and (labels <= 1).all()
    far = np.array([[2.0, 2.0, 2.5, 2.5]])
    assert overlap_labels(far, base_crop_boxes(3)).sum() == 0


def test_position_loss_is_zero_for_a_perfect_assignment_and_positive_otherwise():
    labels = torch.tensor(overlap_labels(np.array([[0.0, 0.25, 0.5, 0.75], [0.5, 0.5, 1.0, 1.0]]), base_crop_boxes(2)),
                          dtype=torch.float32)
    assert float(position_loss(labels.clone(), labels)) < 1e-5
    assert float(position_loss(labels.flip(1), labels)) > 0.1
    assert float(position_loss(torch.full_like(labels, 0.5), labels)) > 0.05


def test_logits_and_regularisation():
    base = torch.eye(4)
    assert float(regularisation_loss(base)) == 0.0  # orthogonal: nothing to push apart
    assert float(regularisation_loss(torch.ones(4, 3))) == pytest.approx(1.0)
    logits = voco_logits(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]), base)
    np.testing.assert_allclose(logits.numpy(), [[1, 0, 0, 0], [0, 0, 0, 0]])  # relu of cosine


def test_ema_update():
    student, teacher = nn.Linear(2, 2), nn.Linear(2, 2)
    before = teacher.weight.clone()
    ema_update(teacher, student, decay=0.9)
    torch.testing.assert_close(teacher.weight, 0.9 * before + 0.1 * student.weight)
    for _ in range(200):
        ema_update(teacher, student, decay=0.9)
    torch.testing.assert_close(teacher.weight, student.weight)
