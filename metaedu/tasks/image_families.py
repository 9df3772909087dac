"""Heterogeneous few-shot image tasks: episodes drawn from several *families* of image sets.

ARML's image experiments (Yao et al. 2020) mix tasks from different data sets ("Plain-Multi": birds,
textures, aircraft, fungi; "Art-Multi": the same images blurred or drawn in pencil), so that one shared
initialisation has something to tailor. None of those data sets is available here; our mixture is made
of what the package ships, four families that differ in what the images look like:

=====================  ===========================================================================
family                 what an episode's classes are
=====================  ===========================================================================
font glyphs            characters of the glyph alphabets taken from fonts (Cyrillic, Greek, Futura,
                       Script, ..., :func:`metaedu.data.glyphs.load_glyphs`), of the side asked for
invented glyphs        characters of the invented glyph alphabets, of the side asked for
negative glyphs        characters of all alphabets of the side, drawn dark on a bright page (each
                       image x becomes 1 - x): the same shapes, other pixel statistics (Art-Multi's
                       idea of a transformed copy of a data set)
digits                 scikit-learn's real handwritten digits on the glyphs' 28 x 28 canvas. Only 10
                       digit classes exist, so both sides share them: the background side draws from
                       the even-numbered images of each digit, the evaluation side from the odd ones
                       (new drawings of seen classes, not new classes)
=====================  ===========================================================================

A task picks its family uniformly at random, then an ordinary N-way K-shot episode of that family
(:class:`~metaedu.tasks.episodes.EpisodeSampler`, all families drawn from one ``torch.Generator``). A
batch is :class:`FamilyEpisodes`: :class:`~metaedu.tasks.episodes.Episodes` plus ``family`` ``[tasks]``
(an index into the sampler's ``families``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metaedu.data.base import ClassImageSet
from metaedu.runtime import get_device
from metaedu.tasks.episodes import Episodes, EpisodeSampler

FAMILIES = ("font glyphs", "invented glyphs", "negative glyphs", "digits")
SIDES = ("background", "evaluation")


@dataclass
class FamilyEpisodes(Episodes):
    """A batch of episodes and the family each was drawn from (``family`` ``[tasks]``)."""

    family: torch.Tensor | None = None


def family_sets(side: str, glyphs=None) -> dict[str, ClassImageSet]:
    """The image set behind each family on one side (``"background"`` for meta-training, ``"evaluation"``)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    from metaedu.data.digits import load_digits
    from metaedu.data.glyphs import load_glyphs

    glyph_set = (glyphs or load_glyphs()).split(side)
    invented = [c for c, g in enumerate(glyph_set.groups) if g.startswith("Invented")]
    fonts = [c for c, g in enumerate(glyph_set.groups) if not g.startswith("Invented")]
    digits = load_digits(28)
    position = torch.zeros_like(digits.targets)  # each image's place among the images of its digit
    for d in range(digits.n_classes):
        members = (digits.targets == d).nonzero().flatten()
        position[members] = torch.arange(len(members))
    keep = position % 2 == (0 if side == "background" else 1)
    digits = ClassImageSet(digits.images[keep], digits.targets[keep], digits.class_names, name=f"digits/{side}")
    return {
        "font glyphs": glyph_set.subset_classes(fonts, f"font glyphs/{side}"),
        "invented glyphs": glyph_set.subset_classes(invented, f"invented glyphs/{side}"),
        "negative glyphs": glyph_set,  # inverted when sampled
        "digits": digits,
    }


class ImageFamilies:
    """N-way K-shot episodes from a mixture of image families (see the module docstring).

    Args:
        side: ``"background"`` (meta-training) or ``"evaluation"`` (meta-test).
        n_way, k_shot, n_query: classes per episode, support and query images per class.
        families: the families drawn from, uniformly (default: all four).
        device: where the episodes are put.
        seed: seeds the one ``torch.Generator`` every family's sampler draws from.
        glyphs: a loaded :class:`~metaedu.data.glyphs.dataset.GlyphAlphabets` (default: load it).
    """

    def __init__(self, side: str, n_way: int = 5, k_shot: int = 1, n_query: int = 5,
                 families: tuple[str, ...] = FAMILIES, device="cpu", seed: int = 0, glyphs=None) -> None:
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families or len(set(families)) != len(families):
            raise ValueError(f"families must be distinct names from {FAMILIES}, got {families!r}")
        self.families = tuple(families)
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.device = get_device(device)
        self.generator = torch.Generator().manual_seed(seed)
        sets = family_sets(side, glyphs)
        self.samplers = [EpisodeSampler(sets[f], n_way, k_shot, n_query, device=self.device, seed=seed)
                         for f in self.families]
        for s in self.samplers:
            s.generator = self.generator  # one random stream for the whole mixture (and its checkpoint)

    def sample(self, tasks: int = 1) -> FamilyEpisodes:
        if int(tasks) != tasks or tasks < 1:
            raise ValueError(f"tasks must be a whole number >= 1, got {tasks!r}")
        family = torch.randint(len(self.families), (tasks,), generator=self.generator)  # [tasks]
        order, parts = [], []
        for f, sampler in enumerate(self.samplers):
            where = (family == f).nonzero().flatten()
            if len(where) == 0:
                continue
            eps = sampler.sample(len(where))
            xs, xq = eps.x_support, eps.x_query
            if self.families[f] == "negative glyphs":
                xs, xq = 1 - xs, 1 - xq
            order.append(where)
            parts.append((xs, eps.y_support, xq, eps.y_query, eps.classes))
        back = torch.cat(order).argsort()  # from the family-grouped order back to the order drawn
        xs, ys, xq, yq, classes = (torch.cat(p)[back.to(p[0].device)] for p in zip(*parts))
        return FamilyEpisodes(xs, ys, xq, yq, classes, self.n_way, self.k_shot, self.n_query,
                              family=family.to(self.device))
