"""The embedded glyph alphabets: size, split, leakage, determinism, cache, and Omniglot-like statistics."""

import numpy as np
import pytest
from scipy import ndimage

from metaedu.data import glyphs as G


def test_size_and_structure(glyphs):
    assert glyphs.n_characters >= 1000
    assert len(glyphs.alphabet_names()) >= 20
    assert glyphs.images.shape == (glyphs.n_characters, 20, 28, 28)
    assert glyphs.images.dtype == np.uint8
    bg, ev = glyphs.split("background"), glyphs.split("evaluation")
    assert bg.n_classes + ev.n_classes == glyphs.n_characters
    assert bg.counts().min() == 20 and ev.counts().min() == 20
    assert len(bg.group_names()) >= 10 and len(ev.group_names()) >= 10
    # every image has ink and none is all ink
    ink = glyphs.images.reshape(glyphs.n_characters * 20, -1).mean(1) / 255
    assert ink.min() > 0.01 and ink.max() < 0.5


def test_identical_shapes_counted_once(glyphs):
    keys = [G._shape_key(t.strokes) for t in glyphs.types]
    names = [t.name for t in glyphs.types]
    assert len(set(names)) == len(names)
    assert len(set(keys)) >= 0.97 * len(keys)  # simplification may merge a few; the source shapes are distinct


def test_sides_are_disjoint_and_never_share_a_letter(glyphs):
    bg_alphabets = set(glyphs.alphabet_names("background"))
    ev_alphabets = set(glyphs.alphabet_names("evaluation"))
    assert not bg_alphabets & ev_alphabets
    side_of = {}
    for t, side in zip(glyphs.types, glyphs.sides):
        if t.script in G.LETTER_SCRIPTS:
            key = (t.script, t.code) if t.code.isalpha() else ("common", t.code)
            assert side_of.setdefault(key, side) == side, f"{key} is on both sides"


def test_no_near_duplicate_straddles_the_split(glyphs):
    feats = G.canonical_images(glyphs.types)
    feats = feats - feats.mean(1, keepdims=True)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8
    side = np.array([s == "evaluation" for s in glyphs.sides])
    cross = feats[side] @ feats[~side].T
    assert cross.max() <= G.NEAR_DUPLICATE_SIMILARITY + 1e-6
    # the check is not vacuous: within a side, near duplicates do exist (e.g. one letter in two fonts)
    within = feats[~side] @ feats[~side].T
    np.fill_diagonal(within, 0)
    assert within.max() > G.NEAR_DUPLICATE_SIMILARITY


def test_deterministic_for_a_seed(glyphs):
    for c in (0, 500, glyphs.n_characters - 1):
        again = G.character_images(glyphs.types[c], c, glyphs.seed, 28)
        np.testing.assert_array_equal(again, glyphs.images[c])
    other = G.character_images(glyphs.types[0], 0, glyphs.seed + 1, 28)
    assert not np.array_equal(other, glyphs.images[0])


def test_drawers_differ(glyphs):
    img = glyphs.images[10].astype(float)
    diffs = [np.abs(img[0] - img[d]).mean() for d in range(1, 20)]
    assert min(diffs) > 1.0  # every drawing of a character is its own


# --- statistics against real Omniglot (shared/reference/data-formats.md), measured at 105 x 105

#: statistic -> (p10, p90) of real Omniglot's background set
OMNIGLOT_P10_P90 = {
    "ink": (0.049, 0.111),
    "width": (0.35, 0.77),
    "height": (0.42, 0.75),
    "centroid_x": (-0.091, 0.064),
    "centroid_y": (-0.113, 0.037),
    "pen": (8.0, 12.0),
}


def image_statistics(img: np.ndarray) -> dict:
    """The table's statistics for one binary image (ink = 1)."""
    ink = img.astype(bool)
    n = ink.shape[0]
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    ys, xs = np.nonzero(ink)
    dist = ndimage.distance_transform_edt(ink)
    ridge = (dist == ndimage.maximum_filter(dist, 3)) & ink  # the stroke's centre line
    return {
        "ink": ink.mean(),
        "width": (cols[-1] - cols[0] + 1) / n,
        "height": (rows[-1] - rows[0] + 1) / n,
        "centroid_x": (xs.mean() + 0.5) / n - 0.5,
        "centroid_y": (ys.mean() + 0.5) / n - 0.5,
        "pen": 2 * np.median(dist[ridge]),
    }


def test_pen_width_estimator_on_a_known_stroke():
    img = np.zeros((105, 105), dtype=np.uint8)
    img[40:50, 10:90] = 1  # a bar 10 pixels thick
    assert image_statistics(img)["pen"] == pytest.approx(10, abs=1)


def test_images_are_statistically_like_omniglot(glyphs):
    rng = np.random.default_rng(0)
    chars = rng.choice(glyphs.n_characters, size=60, replace=False)
    drawers = G.sample_drawers(glyphs.seed)
    stats = []
    for c in chars:
        for img in G.character_images(glyphs.types[c], int(c), glyphs.seed, 105, drawers)[::4]:
            stats.append(image_statistics(img // 255))
    for key, (p10, p90) in OMNIGLOT_P10_P90.items():
        median = float(np.median([s[key] for s in stats]))
        assert p10 <= median <= p90, f"median {key} {median:.3f} is outside real Omniglot's p10..p90 [{p10}, {p90}]"
    # and the spread is real, not one size for all
    widths = [s["width"] for s in stats]
    assert np.percentile(widths, 90) - np.percentile(widths, 10) > 0.1


def test_descriptors_hold_no_pixels_and_follow_the_split(glyphs):
    d = glyphs.descriptors("evaluation")
    assert d.shape[0] == glyphs.split("evaluation").n_classes
    assert np.isfinite(d.numpy()).all()
    assert len({tuple(r) for r in d.numpy().round(4)}) > 0.9 * d.shape[0]  # they tell classes apart


def test_cache_round_trip_and_damaged_cache(tmp_path, monkeypatch, glyphs):
    calls = []

    def fake_build(seed, size):
        calls.append((seed, size))
        return G.GlyphAlphabets(
            images=glyphs.images[:3], types=glyphs.types[:3], alphabets=glyphs.alphabets[:3],
            sides=glyphs.sides[:3], seed=seed, size=size, build_seconds=1.5,
        )

    monkeypatch.setattr(G, "build_glyphs", fake_build)
    first = G.load_glyphs(seed=9, root=tmp_path)
    second = G.load_glyphs(seed=9, root=tmp_path)
    assert calls == [(9, 28)]
    np.testing.assert_array_equal(first.images, second.images)
    assert [t.name for t in second.types] == [t.name for t in first.types]
    assert second.build_seconds == 1.5 and second.load_seconds > 0
    array_path, _ = G._cache_paths(9, 28, tmp_path)
    array_path.write_bytes(b"not an npz")
    third = G.load_glyphs(seed=9, root=tmp_path)
    assert len(calls) == 2 and third.n_characters == 3


def test_bad_arguments(glyphs):
    with pytest.raises(ValueError, match="side must be"):
        glyphs.split("test")
    with pytest.raises(ValueError, match="at least 8"):
        G.build_glyphs(size=4)
