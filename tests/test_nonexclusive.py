"""Non-mutually-exclusive task families: pose targets, the exclusive switches, one-hot sinusoids."""

from __future__ import annotations

import pytest
import torch

from metaedu.data.base import ClassImageSet
from metaedu.tasks.nonexclusive import (
    POSE_SCALE,
    GlyphPoseTasks,
    OneHotSinusoidTasks,
    angle_error,
    glyph_classification,
    rotate,
    rotational_symmetry,
)


def _shapes() -> ClassImageSet:
    """Three hand-drawn 28 x 28 characters, two drawings each: an "L", an "F" (no symmetry) and a "+" (4-fold)."""
    images = torch.zeros(6, 1, 28, 28)
    for d in range(2):
        shift = d  # the second drawing is moved one pixel
        images[0 + d, 0, 6 + shift:22 + shift, 8:11] = 1  # L: a stem ...
        images[0 + d, 0, 19 + shift:22 + shift, 8:20] = 1  # ... and a foot
        images[2 + d, 0, 6:22, 9 + shift:12 + shift] = 1  # F: a stem, ...
        images[2 + d, 0, 6:9, 9 + shift:21 + shift] = 1  # ... a top bar ...
        images[2 + d, 0, 12:15, 9 + shift:17 + shift] = 1  # ... and a middle bar
        images[4 + d, 0, 6:22, 12:16] = 1  # +: vertical ...
        images[4 + d, 0, 12:16, 6:22] = 1  # ... and horizontal bar, centred
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    return ClassImageSet(images, targets, ["L", "F", "+"], name="shapes")


def test_rotate_matches_quarter_turns_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g)
    turned = rotate(x, torch.tensor([0.0, 90.0, 180.0, 270.0]))
    for k in range(4):
        torch.testing.assert_close(turned[k], torch.rot90(x[k], k, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_symmetric_glyphs_are_detected_and_left_out():
    data = _shapes()
    score = rotational_symmetry(data.images[::2])
    assert score[2] > 0.95, "a centred plus sign looks the same after a quarter turn"
    assert score[0] < 0.6 and score[1] < 0.6
    tasks = GlyphPoseTasks(data, k_shot=3, n_query=2)
    assert tasks.left_out == 1 and tasks.characters.tolist() == [0, 1]
    kept_all = GlyphPoseTasks(data, k_shot=3, n_query=2, symmetry_threshold=None)
    assert kept_all.left_out == 0


def _oracle(task: GlyphPoseTasks, batch, x, grid_step: float = 0.5) -> torch.Tensor:
    """A perfect predictor that knows each task's drawing and offset: the best-matching turn on a fine grid."""
    angles = torch.arange(0.0, task.angle_range, grid_step)
    preds = []
    for i in range(x.shape[0]):
        drawing = task.images[batch.params["drawing"][i]].expand(len(angles), -1, -1, -1)
        bank = rotate(drawing, angles + batch.params["offset"][i])  # [angles, 1, H, W]
        dist = ((x[i][:, None] - bank[None]) ** 2).flatten(2).sum(-1)  # [n, angles]
        preds.append(angles[dist.argmin(1)] * POSE_SCALE / 360)
    return torch.stack(preds)[..., None]


@pytest.mark.parametrize("exclusive", [False, True])
def test_pose_targets_are_turns_relative_to_the_canonical_orientation(exclusive):
    data = _shapes()
    task = GlyphPoseTasks(data, k_shot=4, n_query=3, mutually_exclusive=exclusive, seed=3)
    batch = task.sample(6)
    assert batch.x_support.shape == (6, 4, 1, 28, 28) and batch.y_query.shape == (6, 3, 1)
    y = torch.cat([batch.y_support, batch.y_query], 1)
    torch.testing.assert_close(y[..., 0], batch.params["angle"] * POSE_SCALE / 360)
    assert float(y.min()) >= 0 and float(y.max()) < POSE_SCALE
    x = torch.cat([batch.x_support, batch.x_query], 1)
    error = angle_error(_oracle(task, batch, x), y)
    assert float(error.max()) < 0.5 * POSE_SCALE / 360 + 1e-4, "a perfect predictor has (grid-limited) zero error"


def test_the_symmetric_glyph_makes_the_target_ambiguous():
    data = _shapes()
    task = GlyphPoseTasks(data, k_shot=8, n_query=8, symmetry_threshold=None, seed=1)
    batch = task.sample(12)
    plus = batch.params["character"] == 2
    assert plus.any() and (~plus).any()
    x = torch.cat([batch.x_support, batch.x_query], 1)
    y = torch.cat([batch.y_support, batch.y_query], 1)
    error = angle_error(_oracle(task, batch, x, grid_step=1.0), y)[..., 0]  # [tasks, n]
    assert float(error[~plus].max()) < 0.03
    assert float(error[plus].max()) > 1.5, "a quarter turn of a plus sign is invisible, so the oracle is wrong by 2.5"


def test_offsets_are_fixed_per_character_unless_exclusive():
    data = _shapes()
    fixed = GlyphPoseTasks(data, k_shot=2, n_query=1, seed=0).sample(40)
    for c in (0, 1):
        offsets = fixed.params["offset"][fixed.params["character"] == c]
        assert len(offsets) > 1 and torch.allclose(offsets, offsets[0].expand_as(offsets))
    mixed = GlyphPoseTasks(data, k_shot=2, n_query=1, mutually_exclusive=True, seed=0).sample(40)
    offsets = mixed.params["offset"][mixed.params["character"] == 0]
    assert float(offsets.std()) > 30, "a new canonical orientation for every task"


def test_one_drawing_per_character():
    data = _shapes()
    batch = GlyphPoseTasks(data, k_shot=2, n_query=1, drawings=1, seed=0).sample(30)
    assert set(batch.params["drawing"].tolist()) <= {0, 2}
    both = GlyphPoseTasks(data, k_shot=2, n_query=1, seed=0).sample(60)
    assert {1, 3} & set(both.params["drawing"].tolist())


def test_pose_tasks_reject_bad_settings():
    data = _shapes()
    with pytest.raises(ValueError, match="angle_range"):
        GlyphPoseTasks(data, angle_range=0)
    with pytest.raises(ValueError, match="drawings"):
        GlyphPoseTasks(data, drawings=0)
    with pytest.raises(ValueError, match="symmetry_threshold"):
        GlyphPoseTasks(data, symmetry_threshold=-2)
    with pytest.raises(ValueError, match="one angle per image"):
        rotate(torch.zeros(2, 1, 5, 5), torch.zeros(3))


def test_nme_classification_keeps_one_label_per_class(glyphs):
    data = glyphs.split("background").subset_classes(range(60))
    fixed = glyph_classification(data, 5, 1, 1, seed=0).sample(50)
    label_of = {}
    for row in range(fixed.tasks):
        for label, cls in enumerate(fixed.classes[row].tolist()):
            assert label_of.setdefault(cls, label) == label, "a class changed its label"
    shuffled = glyph_classification(data, 5, 1, 1, mutually_exclusive=True, seed=0).sample(50)
    seen = {}
    for row in range(shuffled.tasks):
        for label, cls in enumerate(shuffled.classes[row].tolist()):
            seen.setdefault(cls, set()).add(label)
    assert max(len(v) for v in seen.values()) > 1


def test_one_hot_sinusoids_carry_the_amplitude_code_in_training_only():
    train = OneHotSinusoidTasks(k_shot=5, n_query=10, seed=0).sample(200)
    assert train.x_support.shape == (200, 5, 21) and train.y_query.shape == (200, 10, 1)
    grid = torch.linspace(0.1, 4.0, 20)
    torch.testing.assert_close(train.params["amplitude"], grid[train.params["code"]])
    hot = train.x_query[..., 1:].argmax(-1)
    assert (hot == train.params["code"][:, None]).all() and torch.allclose(train.x_query[..., 1:].sum(-1), torch.ones(1))
    u = torch.cat([train.x_support, train.x_query], 1)[..., :1]
    y = torch.cat([train.y_support, train.y_query], 1)
    noise = y - train.params["amplitude"][:, None, None] * torch.sin(u)
    assert 0.09 < float(noise.std()) < 0.11 and float(u.abs().max()) <= 5
    test = OneHotSinusoidTasks(k_shot=5, n_query=10, test=True, seed=1).sample(400)
    a = test.params["amplitude"]
    assert float(a.min()) >= 0.1 and float(a.max()) <= 4.0
    assert not torch.isin(a, grid).all(), "test amplitudes cover the interval, not only the 20 values"
    index = torch.bucketize(a, grid).clamp(max=19)
    assert (test.params["code"] != index).float().mean() > 0.8, "the test code is random"
    exclusive = OneHotSinusoidTasks(mutually_exclusive=True, seed=2).sample(400)
    assert (exclusive.params["code"] != torch.bucketize(exclusive.params["amplitude"], grid)).float().mean() > 0.8


def test_angle_error_goes_round_the_circle():
    torch.testing.assert_close(angle_error(torch.tensor([9.9, 0.2, 5.0]), torch.tensor([0.1, 9.8, 0.0])),
                               torch.tensor([0.2, 0.4, 5.0]))
