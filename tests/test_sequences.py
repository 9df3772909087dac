import pytest
import torch
import torch.nn.functional as F

from metaedu.data.base import ClassImageSet
from metaedu.tasks.sequences import SequenceSampler, instance_numbers, offset_labels


def toy_set(n_classes=8, per_class=6, side=4):
    """Image pixel (0, 0) holds the class id / 100 and pixel (0, 1) the drawing's index / 100."""
    images, targets = [], []
    for c in range(n_classes):
        for i in range(per_class):
            img = torch.zeros(1, side, side)
            img[0, 0, 0] = c / 100
            img[0, 0, 1] = i / 100
            images.append(img)
            targets.append(c)
    return ClassImageSet(torch.stack(images), torch.tensor(targets), [f"c{c}" for c in range(n_classes)], name="toy")


def test_shapes_and_time_offset_labels():
    s = SequenceSampler(toy_set(), n_classes=3, per_class=4, image_size=4, seed=0)
    seq = s.sample(5)
    assert seq.x.shape == (5, 12, 16) and seq.y.shape == (5, 12) and seq.targets.shape == (5, 12, 1)
    assert seq.label_in.shape == (5, 12, 3) and seq.inputs.shape == (5, 12, 19) and s.input_size == 19
    assert (seq.label_in[:, 0] == 0).all()  # (x_1, null)
    for t in range(1, 12):  # (x_t, y_{t-1})
        assert torch.equal(seq.label_in[:, t], F.one_hot(seq.y[:, t - 1], 3).float())


def test_every_class_appears_per_class_times_with_one_label_and_distinct_images():
    s = SequenceSampler(toy_set(), n_classes=4, per_class=5, image_size=4, seed=1)
    seq = s.sample(6)
    for b in range(6):
        assert torch.equal(torch.bincount(seq.y[b], minlength=4), torch.full((4,), 5))
        cls = (seq.x[b, :, 0] * 100).round().long()  # the class behind each step
        drawing = (seq.x[b, :, 1] * 100).round().long()
        for label in range(4):
            behind = cls[seq.y[b] == label]
            assert (behind == behind[0]).all()  # a label names one class within the episode
            assert len(set(drawing[seq.y[b] == label].tolist())) == 5  # five different drawings
        assert len(set(cls.tolist())) == 4


def test_order_and_label_assignment_are_shuffled_between_episodes():
    s = SequenceSampler(toy_set(), n_classes=3, per_class=4, image_size=4, seed=2)
    seq = s.sample(50)
    class_major = torch.arange(3).repeat_interleave(4)
    assert not all(torch.equal(seq.y[b], class_major) for b in range(50))
    assert len({tuple(seq.y[b].tolist()) for b in range(50)}) > 40
    # class 0, whenever drawn, gets every label across episodes
    labels_of_0 = set()
    for b in range(50):
        cls = (seq.x[b, :, 0] * 100).round().long()
        labels_of_0.update(seq.y[b][cls == 0].tolist())
    assert labels_of_0 == {0, 1, 2}


def test_instance_numbers_match_a_slow_count():
    y = torch.randint(4, (3, 20), generator=torch.Generator().manual_seed(0))
    fast = instance_numbers(y)
    for b in range(3):
        seen = {}
        for t in range(20):
            seen[int(y[b, t])] = seen.get(int(y[b, t]), 0) + 1
            assert fast[b, t] == seen[int(y[b, t])]


def test_string_labels_are_distinct_five_character_codes():
    s = SequenceSampler(toy_set(), n_classes=4, per_class=3, image_size=4, label_length=5, seed=3)
    seq = s.sample(8)
    assert seq.targets.shape == (8, 12, 5) and seq.label_in.shape == (8, 12, 25) and s.input_size == 16 + 25
    assert seq.targets.min() >= 0 and seq.targets.max() <= 4
    for b in range(8):
        strings = {}
        for t in range(12):
            strings.setdefault(int(seq.y[b, t]), set()).add(tuple(seq.targets[b, t].tolist()))
        assert all(len(v) == 1 for v in strings.values())  # one string per class
        assert len({next(iter(v)) for v in strings.values()}) == 4  # distinct across classes
    # the input is the five one-hot codes of the previous step's string
    code = seq.label_in[0, 1].view(5, 5)
    assert torch.equal(code.argmax(1), seq.targets[0, 0]) and torch.equal(code.sum(1), torch.ones(5))
    assert torch.equal(offset_labels(seq.targets, 5), seq.label_in)


def test_downsampling_averages_blocks():
    data = ClassImageSet(torch.rand(12, 1, 4, 4), torch.arange(3).repeat_interleave(4), ["a", "b", "c"])
    seq = SequenceSampler(data, n_classes=3, per_class=4, image_size=2, seed=0).sample(1)
    pooled = F.avg_pool2d(data.images, 2).flatten(1)  # [12, 4], an independent route
    for t in range(12):
        assert torch.isclose(pooled, seq.x[0, t]).all(1).any()


def test_same_seed_same_sequences():
    a = SequenceSampler(toy_set(), 3, 4, image_size=4, seed=7).sample(3)
    b = SequenceSampler(toy_set(), 3, 4, image_size=4, seed=7).sample(3)
    c = SequenceSampler(toy_set(), 3, 4, image_size=4, seed=8).sample(3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_glyph_sequences_with_rotations(glyphs):
    s = SequenceSampler(glyphs.split("background"), n_classes=5, per_class=10, image_size=20,
                        rotations=(0, 90, 180, 270), seed=0)
    seq = s.sample(2)
    assert seq.x.shape == (2, 50, 400) and 0 <= seq.x.min() and seq.x.max() <= 1
    assert seq.instance.max() == 10


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="label_length"):
        SequenceSampler(toy_set(), 3, 2, image_size=4, label_length=3)
    with pytest.raises(ValueError, match="per_class"):
        SequenceSampler(toy_set(per_class=6), 3, 7, image_size=4)
    with pytest.raises(ValueError, match="image_size"):
        SequenceSampler(toy_set(), 3, 2, image_size=0)
    with pytest.raises(ValueError, match="n_classes"):
        SequenceSampler(toy_set(), 1, 2, image_size=4)


def test_encoder_replaces_pixels_with_its_features():
    # encoder: the two informative pixels of each full-size image -> [n, 2]
    enc = lambda images: images[:, 0, 0, :2] * 100  # noqa: E731
    s = SequenceSampler(toy_set(), n_classes=3, per_class=4, image_size=2, seed=0, encoder=enc)
    seq = s.sample(4)
    assert s.feature_size == 2 and s.input_size == 2 + 3 and seq.x.shape == (4, 12, 2)
    plain = SequenceSampler(toy_set(), n_classes=3, per_class=4, image_size=4, seed=0).sample(4)
    # same draws: the features are the class id and drawing index read off the unresized images
    assert torch.allclose(seq.x, plain.x[..., :2] * 100) and torch.equal(seq.y, plain.y)
    with pytest.raises(ValueError, match="encoder"):
        SequenceSampler(toy_set(), n_classes=3, per_class=4, encoder="conv4")
    with pytest.raises(ValueError, match="encoder"):
        SequenceSampler(toy_set(), n_classes=3, per_class=4, encoder=lambda x: x)  # keeps 4 dims


def test_images_prepared_once_equal_images_prepared_at_each_draw():
    """Pixels are resized once up front (before rotation) and encoder features computed once (without
    rotations); both must give what resizing / encoding each drawn image would."""
    data = ClassImageSet(torch.rand(48, 1, 6, 6, generator=torch.Generator().manual_seed(0)),
                         torch.arange(8).repeat_interleave(6), [f"c{c}" for c in range(8)])
    pool = lambda images: F.avg_pool2d(images, 3).flatten(1)  # noqa: E731  [n, 4], resizing 6 -> 2
    rotations = (0, 90, 180, 270)
    prepared = SequenceSampler(data, 3, 4, image_size=2, rotations=rotations, seed=4)
    at_draw = SequenceSampler(data, 3, 4, image_size=2, rotations=rotations, seed=4, encoder=pool)
    assert prepared.prepared == "resized" and at_draw.prepared == "none"
    a, b = prepared.sample(5), at_draw.sample(5)
    assert torch.equal(a.y, b.y) and torch.allclose(a.x, b.x, atol=1e-6)
    encoded = SequenceSampler(data, 3, 4, image_size=2, seed=4, encoder=pool)
    plain = SequenceSampler(data, 3, 4, image_size=6, seed=4)
    assert encoded.prepared == "encoded"
    c, d = encoded.sample(5), plain.sample(5)
    assert torch.allclose(c.x, pool(d.x.view(-1, 1, 6, 6)).view(5, 12, 4), atol=1e-6)
