import pytest
import torch

from metaedu.data.base import ClassImageSet
from metaedu.tasks.episodes import EpisodeSampler


def toy_set(n_classes=6, per_class=5, ragged=False):
    """Each image is filled with its class id and its index within the class, so draws are traceable."""
    images, targets = [], []
    for c in range(n_classes):
        count = per_class + (c % 3 if ragged else 0)
        for i in range(count):
            img = torch.zeros(1, 4, 4)
            img[0, 0, 0] = c
            img[0, 0, 1] = i
            img[0, 1, 0] = 1.0  # a mark to follow through rotations
            images.append(img)
            targets.append(c)
    return ClassImageSet(torch.stack(images), torch.tensor(targets), [f"c{c}" for c in range(n_classes)],
                         groups=["a" if c < n_classes // 2 else "b" for c in range(n_classes)], name="toy")


def test_shapes_and_labels():
    s = EpisodeSampler(toy_set(), n_way=3, k_shot=2, n_query=3, seed=0)
    e = s.sample(4)
    assert e.x_support.shape == (4, 6, 1, 4, 4) and e.x_query.shape == (4, 9, 1, 4, 4)
    assert torch.equal(e.y_support[0], torch.tensor([0, 0, 1, 1, 2, 2]))
    assert torch.equal(e.y_query[2], torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]))
    # every image carries the class behind its label, and support/query images are distinct
    for t in range(4):
        for lab in range(3):
            cls = e.classes[t, lab]
            sup = e.x_support[t][e.y_support[t] == lab]
            qry = e.x_query[t][e.y_query[t] == lab]
            assert (sup[:, 0, 0, 0] == cls).all() and (qry[:, 0, 0, 0] == cls).all()
            idx = torch.cat([sup[:, 0, 0, 1], qry[:, 0, 0, 1]])
            assert len(set(idx.tolist())) == 5
        assert len(set(e.classes[t].tolist())) == 3


def test_deterministic_for_a_seed_and_independent_of_global_rng():
    a = EpisodeSampler(toy_set(), 3, 1, 2, seed=5).sample(3)
    torch.manual_seed(123)
    torch.rand(10)
    b = EpisodeSampler(toy_set(), 3, 1, 2, seed=5).sample(3)
    c = EpisodeSampler(toy_set(), 3, 1, 2, seed=6).sample(3)
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.classes, b.classes)
    assert not torch.equal(a.classes, c.classes)


def test_label_shuffling_on_and_off():
    data = toy_set(n_classes=6)
    on = EpisodeSampler(data, 3, 1, 1, seed=0).sample(200)
    labels_of_class0 = {int(l) for t, row in enumerate(on.classes) for l, c in enumerate(row) if c == 0}
    assert len(labels_of_class0) == 3  # a class takes every label across episodes
    off = EpisodeSampler(data, 3, 1, 1, shuffle_labels=False, seed=0).sample(200)
    label_of = {}
    for row in off.classes:
        for lab, c in enumerate(row.tolist()):
            assert label_of.setdefault(c, lab) == lab  # one fixed label per class
    assert len(label_of) == 6  # and every class still appears


def test_rotations_make_new_classes():
    data = toy_set(n_classes=2, per_class=3)
    s = EpisodeSampler(data, n_way=8, k_shot=1, n_query=1, rotations=(0, 90, 180, 270), seed=1)
    e = s.sample(1)
    assert sorted(e.classes[0].tolist()) == list(range(8))
    for lab, cls in enumerate(e.classes[0].tolist()):
        img = e.x_support[0, lab, 0]
        unrotated = torch.rot90(img, -(cls // 2), dims=(0, 1))
        assert unrotated[1, 0] == 1.0  # the mark is back in place
        index = int(unrotated[0, 1])
        base = data.images[data.targets == cls % 2][index, 0]
        assert torch.equal(img, torch.rot90(base, cls // 2, dims=(0, 1)))


def test_ragged_classes_and_within_group():
    data = toy_set(n_classes=6, per_class=4, ragged=True)
    e = EpisodeSampler(data, 3, 2, 2, within_group=True, seed=0).sample(20)
    for row in e.classes.tolist():
        assert len({data.groups[c] for c in row}) == 1


def test_impossible_requests_say_what_is_possible():
    data = toy_set(n_classes=6, per_class=5)
    with pytest.raises(ValueError, match="has 6 classes; use n_way <= 6"):
        EpisodeSampler(data, n_way=7, k_shot=1)
    with pytest.raises(ValueError, match=r"use k_shot \+ n_query <= 5"):
        EpisodeSampler(data, n_way=2, k_shot=3, n_query=3)
    with pytest.raises(ValueError, match="n_way must be an integer"):
        EpisodeSampler(data, n_way=0, k_shot=1)
    with pytest.raises(ValueError, match="largest group has 3 classes"):
        EpisodeSampler(data, n_way=4, k_shot=1, within_group=True)
    with pytest.raises(ValueError, match="multiples of 90"):
        EpisodeSampler(data, 2, 1, rotations=(0, 45))


def test_glyph_episodes_on_device(glyphs):
    bg = glyphs.split("background")
    e = EpisodeSampler(bg, n_way=20, k_shot=1, n_query=5, device="cpu", seed=0).sample(2)
    assert e.x_support.shape == (2, 20, 1, 28, 28) and e.x_support.dtype == torch.float32
    assert 0.0 <= float(e.x_support.min()) and float(e.x_support.max()) <= 1.0
