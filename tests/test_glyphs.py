"""The embedded glyph alphabets: size, selection, split and leakage, drawing, statistics against real
Omniglot (shared/reference/data-formats.md), structural noise, determinism and the cache."""

import numpy as np
import pytest

from metaedu.data import glyphs as G
from metaedu.data.glyphs import cache as glyph_cache
from metaedu.data.glyphs import selection, split
from metaedu.data.glyphs import statistics as S
from metaedu.data.glyphs.fonts import GlyphType, normalised_strokes, polyline_length, stroke_length
from metaedu.data.glyphs.invented import acceptable
from metaedu.data.glyphs.structure import EVENTS, HOOK_LENGTH, OVERSHOOT_LENGTH, SPLIT_GAP, StructuralNoise, perturb


def test_size_and_structure(glyphs):
    assert glyphs.n_characters >= 1000  # the floor: Omniglot has 1,623
    assert len(glyphs.alphabet_names()) >= 20
    assert glyphs.images.shape == (glyphs.n_characters, 20, 28, 28)
    assert glyphs.images.dtype == np.uint8
    bg, ev = glyphs.split("background"), glyphs.split("evaluation")
    assert bg.n_classes + ev.n_classes == glyphs.n_characters
    assert bg.counts().min() == 20 and ev.counts().min() == 20
    assert len(bg.group_names()) >= 10 and len(ev.group_names()) >= 10
    assert 0.3 <= ev.n_classes / glyphs.n_characters <= 0.5
    # every image has ink and none is all ink
    ink = glyphs.images.reshape(glyphs.n_characters * 20, -1).mean(1) / 255
    assert ink.min() > 0.01 and ink.max() < 0.5
    # the selection's bookkeeping adds up, and the font characters are what it kept
    sel = glyphs.selection
    assert sel["candidates"] - sel["blots"] - sel["style_variants"] - sel["look_alikes"] == sel["kept"]
    assert glyphs.n_characters - glyphs.n_invented == sel["kept"]
    assert glyphs.n_invented == glyphs.n_characters - sel["kept"] > 0


def test_identical_shapes_counted_once(glyphs):
    names = [t.name for t in glyphs.types]
    assert len(set(names)) == len(names)
    keys = [G.shape_key([np.round(s * 1000) for s in normalised_strokes(t.strokes)]) for t in glyphs.types]
    assert len(set(keys)) == len(keys)


def test_sides_are_disjoint_and_never_share_a_letter_or_an_alphabet(glyphs):
    assert not set(glyphs.alphabet_names("background")) & set(glyphs.alphabet_names("evaluation"))
    side_of = {}
    for t, side in zip(glyphs.types, glyphs.sides):
        key = t.letter or (("alphabet", t.alphabet) if t.alphabet else None)
        if key is not None:
            assert side_of.setdefault(key, side) == side, f"{key} is on both sides"


def test_no_near_duplicate_straddles_the_split(glyphs):
    sim = split.similarity(G.canonical_images(glyphs.types))
    side = np.array([s == "evaluation" for s in glyphs.sides])
    assert sim[side][:, ~side].max() <= G.NEAR_DUPLICATE_SIMILARITY
    # the check is not vacuous: among the fonts' glyphs, near duplicates do exist (one letter in two fonts)
    candidates = split.similarity(G.canonical_images(G.load_glyph_types()))
    assert (candidates > G.NEAR_DUPLICATE_SIMILARITY).sum() > 100


def test_style_variants_look_alikes_and_blots_are_left_out(glyphs):
    fonts = [t for t in glyphs.types if t.alphabet is None]
    by_name = {t.name: t for t in fonts}
    # no two kept glyphs of one letter differ only by style
    by_letter = {}
    for t in fonts:
        if t.letter:
            by_letter.setdefault(t.letter, []).append(selection.style_features(t))
    for letter, feats in by_letter.items():
        for i in range(len(feats)):
            for j in range(i):
                assert selection.style_similarity(feats[i], feats[j]) < selection.STYLE_SIMILARITY, letter
    # one "A" in print survives (the simplest font's), its serif and italic versions do not; script A is another shape
    assert "futural:A" in by_name
    assert not {"rowmant:A", "timesr:A", "timesi:A", "timesib:A", "futuram:A"} & set(by_name)
    # no two characters (font or invented) have the same shape, none is a blot
    assert split.similarity(G.canonical_images(glyphs.types)).max() <= G.NEAR_DUPLICATE_SIMILARITY
    assert max(selection.blot_coverage(t) for t in glyphs.types) <= selection.BLOT_COVERAGE
    # the filled block among the fonts' glyphs is a blot and was left out
    block = next(t for t in G.load_glyph_types() if t.name == "futural:\x7f")
    assert selection.blot_coverage(block) > 0.9 and block.name not in by_name


def test_style_similarity_known_cases():
    upright = GlyphType("test", "A", "latin", [np.array([[0.0, 1.0], [0.5, 0.0], [1.0, 1.0]]), np.array([[0.25, 0.5], [0.75, 0.5]])])
    italic = GlyphType("test", "A", "latin", [s - 0.2 * s[:, 1:2] * np.array([1.0, 0.0]) for s in upright.strokes])
    serif = GlyphType("test", "A", "latin", upright.strokes + [np.array([[-0.08, 1.0], [0.08, 1.0]]), np.array([[0.92, 1.0], [1.08, 1.0]])])
    other = GlyphType("test", "O", "latin", [np.stack([np.cos(a), np.sin(a)], 1) for a in [np.linspace(0, 2 * np.pi, 40)]])
    f = {g: selection.style_features(x) for g, x in (("up", upright), ("it", italic), ("se", serif), ("o", other))}
    assert selection.style_similarity(f["up"], f["it"]) > 0.9
    assert selection.style_similarity(f["up"], f["se"]) >= selection.STYLE_SIMILARITY
    assert selection.style_similarity(f["up"], f["o"]) < selection.STYLE_SIMILARITY


def test_invented_alphabets(glyphs):
    invented = [(t, s) for t, s in zip(glyphs.types, glyphs.sides) if t.alphabet]
    names = {t.alphabet for t, _ in invented}
    assert len(names) >= 5
    for name in names:
        members = [t for t, _ in invented if t.alphabet == name]
        assert 10 <= len(members) <= 45, name
        assert len({s for t, s in invented if t.alphabet == name}) == 1, f"{name} straddles the split"
    assert all(acceptable(t.strokes) for t, _ in invented)
    # fixed characters: the invented types do not depend on the data seed (only drawings do)
    again = G.invent_alphabets([t for t in glyphs.types if t.alphabet is None])
    assert sorted(t.name for t in again) == sorted(t.name for t, _ in invented)


def test_new_character_is_drawable(glyphs):
    rng = np.random.default_rng(3)
    t = G.new_character(glyphs.types, rng)
    assert 1 <= len(t.strokes) <= 4 and t.script == "new"
    images = G.character_images(t, 10_000, seed=0, size=28)
    assert images.shape == (20, 28, 28) and (images.reshape(20, -1).max(1) > 0).all()


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


# --- statistics against real Omniglot, with the reference page's definitions


def test_statistics_on_known_shapes():
    img = np.zeros((105, 105), dtype=np.uint8)
    img[40:45, 10:90] = 1  # a bar 5 pixels thick, 80 long
    stats = S.image_statistics(img)
    assert stats["pen"] == 5 and stats["length"] == pytest.approx(80)
    assert stats["ink"] == pytest.approx(400 / 105**2)
    assert stats["width"] == pytest.approx(80 / 105) and stats["height"] == pytest.approx(5 / 105)
    assert stats["centroid_x"] == pytest.approx((49.5 + 0.5) / 105 - 0.5)
    assert stats["centroid_y"] == pytest.approx((42 + 0.5) / 105 - 0.5)
    img[20:80, 60:66] = 1  # a vertical bar 6 wide crossing it: most ink pixels lie on runs of 5 or 6
    assert S.pen_width(img) in (5, 6)
    # the rasteriser's pen: a straight 5 px stroke reads 5 px at 105, and 5 * 28 / 105 px in grey at 28
    stroke = G.rasterise([[np.array([[0.2, 0.5], [0.8, 0.5]])]], 5.0, 105)[0]  # rows 50.0 to 55.0
    assert S.pen_width(stroke) == 5
    assert S.grey_pen_width(G.downsample(stroke, 28) / 255.0) == pytest.approx(5 * 28 / 105, abs=0.1)
    with pytest.raises(ValueError, match="no ink"):
        S.image_statistics(np.zeros((105, 105)))


@pytest.fixture(scope="module")
def drawn(glyphs):
    """A fifth of the characters drawn by all 20 drawers at 105 x 105, with the structural changes made."""
    chars = range(0, glyphs.n_characters, 5)
    drawers = G.sample_drawers(glyphs.seed)
    binaries, logs = [], []
    for c in chars:
        b, log = G.draw_character(glyphs.types[c], c, glyphs.seed, drawers)
        binaries.append(b)
        logs.append(log)
    return np.stack(binaries), logs, drawers


def test_images_are_statistically_like_omniglot_at_105(drawn):
    binaries, _, _ = drawn
    ours = S.summarise([S.image_statistics(b) for b in binaries.reshape(-1, 105, 105)])
    for key, ref in S.OMNIGLOT_REFERENCE.items():
        p10, median, p90 = ours[key]
        if ref.p10 is None:  # total stroke length: the page gives only "about 160 px"; we allow 20% either way
            assert 0.8 * ref.median <= median <= 1.2 * ref.median, f"median {key} {median:.0f} is not about {ref.median:.0f}"
            continue
        assert ref.p10 <= median <= ref.p90, f"median {key} {median:.3f} is outside real Omniglot's p10..p90 [{ref.p10}, {ref.p90}]"
        # and the spread is about real Omniglot's: our p10 and p90 lie within a third of its p10-p90 range
        # of its own (the tightest row is ink: real Omniglot's densest tenth holds more ink than ours)
        slack = (ref.p90 - ref.p10) / 3
        assert abs(p10 - ref.p10) <= slack and abs(p90 - ref.p90) <= slack, f"{key}: ours {p10:.3f}..{p90:.3f}, real {ref.p10}..{ref.p90}"
    assert ours["pen"] == (5.0, 5.0, 6.0)


def test_images_at_28_keep_the_ink_and_a_thin_pen(glyphs, drawn):
    binaries, _, _ = drawn
    flat = binaries.reshape(-1, 105, 105)
    grey = G.downsample(flat, 28) / 255.0
    # the reduction keeps each image's ink: its mean intensity is its ink fraction at 105 x 105
    np.testing.assert_allclose(grey.mean((1, 2)), flat.mean((1, 2)), rtol=0.05)
    ref = S.OMNIGLOT_REFERENCE["ink"]
    assert ref.p10 <= np.median(grey.mean((1, 2))) <= ref.p90
    # the stored data set is exactly this reduction
    rows = np.arange(0, glyphs.n_characters, 5)
    np.testing.assert_array_equal(G.downsample(binaries[:3], 28), glyphs.images[rows[:3]])
    # pen at 28 x 28: about 1.4 px on the page (5.3 px scaled); grey runs read diagonal strokes up to
    # 1.4 times wider, so the median lies between 1.2 and 1.8 px (the old 8-12 px pen gave 2.5 and more)
    pens = [S.grey_pen_width(g) for g in grey[::7]]
    assert 1.2 <= np.median(pens) <= 1.8


# --- structural noise


def three_strokes():
    return normalised_strokes([np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[0.5, 0.0], [0.5, 1.0]]),
                               np.array([[0.0, 1.0], [0.3, 0.8], [1.0, 1.0]])])


def binomial_ok(events, chances, rate):
    """Observed count within 4.5 standard deviations of the stated rate (and never for rate 0)."""
    sd = np.sqrt(chances * rate * (1 - rate))
    return abs(events - chances * rate) <= 4.5 * sd + 1e-9


def test_structural_noise_happens_at_its_stated_rates():
    rates = StructuralNoise(reorder=0.4, drop=0.2, split=0.25, hook=0.15, overshoot=0.2, spread=0.0)
    rng = np.random.default_rng(0)
    totals = {k: 0 for k in EVENTS} | {f"{k}_chances": 0 for k in EVENTS}
    for _ in range(3000):
        _, log = perturb(three_strokes(), rates, rng)
        for k in totals:
            totals[k] += log[k]
    for k in EVENTS:
        assert totals[f"{k}_chances"] > 2000, k
        assert binomial_ok(totals[k], totals[f"{k}_chances"], getattr(rates, k)), (k, totals[k], totals[f"{k}_chances"])
    # a rate of zero never happens
    _, log = perturb(three_strokes(), StructuralNoise(0, 0, 0, 0, 0, 0), rng)
    assert all(log[k] == 0 for k in EVENTS)


def test_each_drawer_has_own_rates_and_the_data_set_shows_them(drawn):
    _, logs, drawers = drawn
    mean = G.drawers.STRUCTURAL_NOISE
    for k in EVENTS:
        own = np.array([getattr(d.structure, k) for d in drawers])
        assert own.std() > 0.1 * getattr(mean, k), f"drawers do not differ in their {k} rate"
        assert ((own >= 0) & (own <= 2 * getattr(mean, k) + 1e-9)).all()
        # pooled over the drawings, each drawer's events match that drawer's own rate
        for d, drawer in enumerate(drawers):
            events = sum(char_logs[d][k] for char_logs in logs)
            chances = sum(char_logs[d][f"{k}_chances"] for char_logs in logs)
            assert binomial_ok(events, chances, getattr(drawer.structure, k)), (k, d, events, chances)


def test_structural_changes_do_what_they_say():
    base = three_strokes()
    length = stroke_length(base)
    letter_i = [np.array([[0.0, -0.3], [0.0, 0.5]]), np.array([[0.0, -0.5], [0.02, -0.48]])]
    rng = np.random.default_rng(1)
    only = lambda **kw: StructuralNoise(**({"reorder": 0, "drop": 0, "split": 0, "hook": 0, "overshoot": 0, "spread": 0} | kw))  # noqa: E731
    for _ in range(50):
        out, _ = perturb(base, only(drop=1.0), rng)
        kept = [i for i, b in enumerate(base) if any(np.array_equal(o, b) for o in out)]
        assert len(out) == 2 and len(kept) == 2  # one stroke left out, the others untouched
        out, log = perturb(letter_i, only(drop=1.0), rng)  # the dot may go, the stem never
        assert log["drop"] == 1 and len(out) == 1 and np.array_equal(out[0], letter_i[0])
        out, _ = perturb(base, only(reorder=1.0), rng)
        assert sorted(map(bytes, out)) == sorted(map(bytes, base)) and not all(np.array_equal(o, b) for o, b in zip(out, base))
        out, log = perturb(base, only(split=1.0), rng)
        assert len(out) == len(base) + log["split"] and log["split"] >= 1
        lost = length - stroke_length(out)  # the gaps, give or take the second pieces' slip
        assert 0 < lost < log["split"] * (SPLIT_GAP[1] + 0.02)
        out, log = perturb(base, only(hook=1.0), rng)
        gained = stroke_length(out) - length
        assert log["hook"] == 2 * len(base) and 2 * len(base) * HOOK_LENGTH[0] * 0.99 <= gained <= 2 * len(base) * HOOK_LENGTH[1] * 1.01
        out, log = perturb(base, only(overshoot=1.0), rng)
        gained = stroke_length(out) - length
        assert log["overshoot"] == 2 * len(base)
        assert 2 * len(base) * OVERSHOOT_LENGTH[0] * 0.99 <= gained <= 2 * len(base) * OVERSHOOT_LENGTH[1] * 1.01
        for o, b in zip(out, base):  # an overshoot runs on in the stroke's own direction
            tail = o[-1] - b[-1]
            direction = b[-1] - b[-2]
            assert tail @ direction / (np.linalg.norm(tail) * np.linalg.norm(direction)) > 0.99


def test_structural_noise_never_empties_a_drawing():
    rng = np.random.default_rng(2)
    worst = StructuralNoise(reorder=1.0, drop=1.0, split=1.0, hook=0.5, overshoot=0.5, spread=0.0)
    one = [np.array([[0.0, 0.0], [1.0, 1.0]])]
    for _ in range(200):
        out, log = perturb(one, worst, rng)
        assert log["drop_chances"] == 0 and len(out) >= 1 and stroke_length(out) > 0.9 * polyline_length(one[0])
    drawer = G.sample_drawers(0)[0]
    drawer.structure = worst
    for strokes in (one, three_strokes()):
        glyph = GlyphType("test", "x", "test", strokes)
        drawings = [G.draw(glyph.strokes, drawer, rng)[0] for _ in range(100)]
        images = G.rasterise(drawings, drawer.pen_width, 105)
        assert images.reshape(100, -1).sum(1).min() > 100  # every drawing keeps plenty of ink


# --- metadata, cache, bad input


def test_descriptors_hold_no_pixels_and_follow_the_split(glyphs):
    d = glyphs.descriptors("evaluation")
    assert d.shape[0] == glyphs.split("evaluation").n_classes
    assert np.isfinite(d.numpy()).all()
    assert len({tuple(r) for r in d.numpy().round(4)}) > 0.9 * d.shape[0]  # they tell classes apart


def test_cache_round_trip_version_and_damaged_cache(tmp_path, monkeypatch, glyphs):
    calls = []

    def fake_build(seed, size):
        calls.append((seed, size))
        return G.GlyphAlphabets(
            images=glyphs.images[:3], types=glyphs.types[:3], alphabets=glyphs.alphabets[:3],
            sides=glyphs.sides[:3], seed=seed, size=size, build_seconds=1.5, selection={"kept": 3},
        )

    monkeypatch.setattr(glyph_cache.dataset, "build_glyphs", fake_build)
    array_path, meta_path = G.cache_paths(9, 28, tmp_path)
    assert G.DATA_VERSION == 3 and "-v3-" in array_path.name  # the new data never reads an older cache
    array_path.parent.mkdir(parents=True)
    (array_path.parent / array_path.name.replace("-v3-", "-v2-")).write_bytes(b"an older version's images")
    first = G.load_glyphs(seed=9, root=tmp_path)
    second = G.load_glyphs(seed=9, root=tmp_path)
    assert calls == [(9, 28)]
    np.testing.assert_array_equal(first.images, second.images)
    assert [t.name for t in second.types] == [t.name for t in first.types]
    assert [t.alphabet for t in second.types] == [t.alphabet for t in first.types]
    assert second.build_seconds == 1.5 and second.load_seconds > 0 and second.selection == {"kept": 3}
    array_path.write_bytes(b"not an npz")
    third = G.load_glyphs(seed=9, root=tmp_path)
    assert len(calls) == 2 and third.n_characters == 3


def test_bad_arguments(glyphs):
    with pytest.raises(ValueError, match="side must be"):
        glyphs.split("test")
    with pytest.raises(ValueError, match="at least 8"):
        G.build_glyphs(size=4)
    with pytest.raises(ValueError, match="drop must lie in"):
        StructuralNoise(drop=1.5)
    with pytest.raises(ValueError, match="hook \\+ overshoot"):
        StructuralNoise(hook=0.6, overshoot=0.6)
    with pytest.raises(ValueError, match="pen widths must be positive"):
        G.rasterise([[np.zeros((2, 2))]], 0.0)
    with pytest.raises(ValueError, match="grey levels"):
        S.grey_pen_width(np.full((28, 28), 2.0))
