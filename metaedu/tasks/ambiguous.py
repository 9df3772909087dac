"""Ambiguous glyph classification: the course's analogue of PLATIPUS's ambiguous celebA (Finn et al. 2018).

In the paper a celebA task is "positive = faces with attributes a and b", and its
5-shot support set is drawn so that the positives also share a third attribute c: the
support set then fits three hypotheses ({a, b}, {a, c}, {b, c}) equally well, and a
good few-shot learner should propose all three. Here the faces are glyphs and the
attributes are measured on each character's strokes (the same for all 20 drawings):

* **closed loop**: the character, drawn with a pen as wide as the drawings' (15% of
  its size), encloses background (``o``, ``A``, ``8``);
* **taller than wide**: the bounding box of its strokes is at least 1.3 times as tall
  as it is wide (``l``, ``1``); "no" below 1.0;
* **more than two strokes**: the character is drawn with three strokes or more
  (``E``, ``H``, ``#``).

The two measured attributes have a margin (:data:`THRESHOLDS`): characters between
"no" and "yes" are left out (value -1), so that a drawer's slant or aspect, or the
pen's width, cannot flip an attribute. None is rare: of the course's characters with
all three defined, about a quarter have a loop, a third are tall and two thirds have
more than two strokes (the invented alphabets draw many strokes); and, unlike a longer
pen path (which nearly every loop has), every combination of the three occurs on both
sides of the split, so that every task below can be drawn. Drawers sometimes drop or
split a stroke (:mod:`metaedu.data.glyphs`), so an attribute of the character can be
missing from one of its drawings: the labels carry a little noise, as celebA's do.

A *literal* is an attribute with a value (``loop = 1`` or ``loop = 0``); a *hypothesis*
is a conjunction of two literals on different attributes (:data:`HYPOTHESES`, 12 of
them). An ambiguous task (:class:`AmbiguousGlyphTasks`) picks three literals, one per
attribute, and makes the first two its true hypothesis. Its support set holds
``k_shot`` positives that satisfy all three literals and ``k_shot`` negatives that
satisfy at most one, so exactly three hypotheses are consistent with it: the three
pairs of its literals (:func:`consistent_hypotheses` checks that by enumeration).
Its query set holds ``n_query`` images of each of five groups: all three literals;
exactly two (three groups, one per pair); at most one. Under each consistent
hypothesis the query labels differ, which is what coverage reads
(:func:`hypothesis_scores`, :func:`ambiguity_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, product

import numpy as np
import torch
import torch.nn.functional as F

from metaedu.data.glyphs import normalised_strokes, rasterise

#: The three attributes, in column order.
ATTRIBUTES = ("closed loop", "taller than wide", "more than two strokes")
#: How to say each attribute's two values (no, yes).
LITERALS = (
    ("no closed loop", "closed loop"),
    ("not taller than wide", "taller than wide"),
    ("at most two strokes", "more than two strokes"),
)
#: (no if at most, yes if above) for each measurement of :func:`measure_glyphs`.
THRESHOLDS = ((0.0, 0.03), (1.0, 1.3), (2.0, 2.0))
#: Canvas side for the loop measurement, the character's larger side on it, and the pen width (fraction of it).
RENDER_SIZE, CHARACTER_SIDE, PEN_FRACTION = 40, 0.6, 0.15
#: Every conjunction of two literals on different attributes: ((attribute, value), (attribute, value)).
HYPOTHESES = tuple(((a, va), (b, vb)) for a, b in combinations(range(3), 2) for va, vb in product((1, 0), repeat=2))
#: Query groups: which of the task's three literals an image satisfies (True = satisfied).
GROUPS = ("all three", "not the third (true pair only)", "not the second", "not the first", "at most one")


# ----------------------------------------------------------------------------- attributes


def enclosed_area(binary: torch.Tensor) -> torch.Tensor:
    """Pixels of background not reachable from the border, ``[n, H, W]`` bool ink -> ``[n]``."""
    background = ~binary
    reach = torch.zeros_like(background)
    for edge in ((slice(None), 0), (slice(None), -1)):
        reach[:, edge[1], :] = background[:, edge[1], :]
        reach[:, :, edge[1]] = background[:, :, edge[1]]
    while True:  # flood fill from the border, step by step through the 4 neighbours
        grown = reach.clone()
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown[:, :, 1:] |= reach[:, :, :-1]
        grown[:, :, :-1] |= reach[:, :, 1:]
        grown &= background
        if torch.equal(grown, reach):
            break
        reach = grown
    return (background & ~reach).flatten(1).sum(1)


def measure_glyphs(types) -> torch.Tensor:
    """The three measurements of each character type, ``[n, 3]``: enclosed area (fraction of the
    character's box), height / width of the strokes, number of strokes."""
    if not types:
        raise ValueError("no glyph types to measure")
    drawings = [[st * CHARACTER_SIDE + 0.5 for st in normalised_strokes(t.strokes)] for t in types]  # canvas fractions
    canvas = rasterise(drawings, PEN_FRACTION * CHARACTER_SIDE * RENDER_SIZE, size=RENDER_SIZE)  # [n, S, S] ink = 1
    holes = enclosed_area(torch.from_numpy(canvas).bool()).double() / (CHARACTER_SIDE * RENDER_SIZE) ** 2
    extent = np.stack([np.ptp(np.concatenate(t.strokes), axis=0) for t in types])  # [n, 2] (width, height)
    ratio = torch.from_numpy(extent[:, 1] / np.maximum(extent[:, 0], 1e-6))
    strokes = torch.tensor([len(t.strokes) for t in types], dtype=torch.float64)
    return torch.stack([holes, ratio, strokes], 1).float()


def attribute_values(measurements: torch.Tensor) -> torch.Tensor:
    """1 (yes), 0 (no) or -1 (inside the margin, left out) for each attribute: ``[n, 3]`` int64."""
    if measurements.dim() != 2 or measurements.shape[1] != len(ATTRIBUTES):
        raise ValueError(f"measurements must be [n, {len(ATTRIBUTES)}], got {tuple(measurements.shape)}")
    out = torch.full(measurements.shape, -1, dtype=torch.long)
    for j, (no, yes) in enumerate(THRESHOLDS):
        out[measurements[:, j] <= no, j] = 0
        out[measurements[:, j] > yes, j] = 1
    return out


def glyph_attributes(types) -> torch.Tensor:
    """:func:`attribute_values` of :func:`measure_glyphs`: ``[n_types, 3]`` in {1, 0, -1}."""
    return attribute_values(measure_glyphs(types))


# ----------------------------------------------------------------------------- hypotheses


def describe(hypothesis: int) -> str:
    """A hypothesis (an index into :data:`HYPOTHESES`) in words, e.g. "closed loop and at most two strokes"."""
    return " and ".join(LITERALS[attribute][value] for attribute, value in HYPOTHESES[hypothesis])


def holds(values: torch.Tensor, hypothesis) -> torch.Tensor:
    """Which rows of ``values`` ``[n, 3]`` satisfy a conjunction of literals: ``[n]`` bool."""
    ok = torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    for attribute, value in hypothesis:
        ok &= values[:, attribute] == value
    return ok


def consistent_hypotheses(values: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """Indices into :data:`HYPOTHESES` that label every example of a set correctly (by enumeration).

    ``values`` ``[n, 3]`` are the examples' attributes, ``labels`` ``[n]`` their classes (1 = positive).
    """
    return [h for h, hyp in enumerate(HYPOTHESES) if torch.equal(holds(values, hyp).long(), labels.long())]


# ----------------------------------------------------------------------------- tasks


@dataclass
class AmbiguousEpisodes:
    """A batch of ambiguous tasks. Labels: 1 = positive, 0 = negative.

    ``x_support`` ``[tasks, 2 k, ...]`` (negatives first), ``x_query`` ``[tasks, 5 q, ...]`` (group by group,
    :data:`GROUPS`); ``y_query`` = labels under the true hypothesis; ``y_hypotheses`` ``[tasks, 3, 5 q]`` =
    labels under the three consistent hypotheses (true first); ``hypotheses`` ``[tasks, 3]`` their indices.
    """

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    y_hypotheses: torch.Tensor
    hypotheses: torch.Tensor
    literals: torch.Tensor  # [tasks, 3, 2]: (attribute, value) of the task's literals; the first two are the truth

    @property
    def tasks(self) -> int:
        return self.x_support.shape[0]


#: Labels of the five query groups under the task's three consistent hypotheses (rows: truth, 1st+3rd, 2nd+3rd).
_GROUP_LABELS = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [1, 0, 0, 1, 0]])
_HYPOTHESIS_INDEX = {h: i for i, h in enumerate(HYPOTHESES)}


class AmbiguousGlyphTasks:
    """Draws ambiguous glyph tasks from labelled inputs (images, or features of images).

    Args:
        inputs: ``[N, ...]`` one row per image.
        values: ``[N, 3]`` attribute values of each image (:func:`glyph_attributes` of its character);
            rows with a -1 are never drawn.
        k_shot: positives and negatives in the support set (5: the paper's 5-shot).
        n_query: query images per group (5 groups).
        device: where the episode tensors go; seed: this sampler's own generator.
    """

    def __init__(
        self, inputs: torch.Tensor, values: torch.Tensor, k_shot: int = 5, n_query: int = 2, device="cpu", seed: int = 0
    ) -> None:
        if inputs.shape[0] != values.shape[0]:
            raise ValueError(f"{inputs.shape[0]} inputs but {values.shape[0]} rows of attribute values")
        if k_shot < 1 or n_query < 1:
            raise ValueError(f"k_shot and n_query must be at least 1, got {k_shot} and {n_query}")
        self.k_shot, self.n_query = int(k_shot), int(n_query)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.inputs = inputs.to(self.device)
        self.values = values.long().cpu()
        usable = (self.values >= 0).all(1)
        # one pool per combination of literal values; its groups: all three literals, all but attribute 0,
        # all but attribute 1, all but attribute 2, at most one
        pools, self.pool_values = [], []
        for v in product((1, 0), repeat=3):
            match = (self.values == torch.tensor(v)) & usable[:, None]  # [N, 3]
            groups = [torch.nonzero(match.all(1)).flatten()]
            groups += [
                torch.nonzero(usable & ~match[:, j] & match[:, [i for i in range(3) if i != j]].all(1)).flatten()
                for j in range(3)
            ]
            groups.append(torch.nonzero(usable & (match.sum(1) <= 1)).flatten())
            if min(len(g) for g in groups) >= max(self.k_shot, self.n_query):
                pools.append(groups)
                self.pool_values.append(v)
        if not pools:
            raise ValueError(
                "no combination of attribute values has enough images in every group; "
                "use more characters or a smaller k_shot / n_query"
            )
        size = max(len(g) for groups in pools for g in groups)
        self.table = torch.full((len(pools), 5, size), -1, dtype=torch.long)  # [pools, groups, rows]
        self.counts = torch.zeros(len(pools), 5, dtype=torch.long)
        for i, groups in enumerate(pools):
            for j, g in enumerate(groups):
                self.table[i, j, : len(g)] = g
                self.counts[i, j] = len(g)

    def _draw(self, pool: torch.Tensor, group: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` distinct rows from group ``group[t]`` of pool ``pool[t]`` for each task t: ``[tasks, n]``."""
        counts = self.counts[pool, group][:, None]  # [tasks, 1]
        pos = (torch.rand(len(pool), n, generator=self.generator) * counts).long()
        for _ in range(1000):  # redraw repeats (every group holds at least n rows)
            pos = pos.sort(1).values
            repeat = torch.zeros_like(pos, dtype=torch.bool)
            repeat[:, 1:] = pos[:, 1:] == pos[:, :-1]
            if not repeat.any():
                break
            pos = torch.where(repeat, (torch.rand(pos.shape, generator=self.generator) * counts).long(), pos)
        pos = pos[:, torch.randperm(n, generator=self.generator)]  # no order within a set
        return self.table[pool, group][torch.arange(len(pool))[:, None], pos]

    def sample(self, tasks: int = 1) -> AmbiguousEpisodes:
        if tasks < 1:
            raise ValueError(f"tasks must be at least 1, got {tasks}")
        g, k, q = self.generator, self.k_shot, self.n_query
        pool = torch.randint(len(self.pool_values), (tasks,), generator=g)  # the literals' values
        third = torch.randint(3, (tasks,), generator=g)  # the attribute that is not part of the truth
        order = torch.stack([torch.tensor([a for a in range(3) if a != t] + [t]) for t in third.tolist()])  # [tasks, 3]
        values = torch.tensor(self.pool_values)[pool]  # [tasks, 3] by attribute
        literals = torch.stack([order, torch.gather(values, 1, order)], -1)  # [tasks, 3, (attribute, value)]
        every = torch.zeros(tasks, dtype=torch.long)
        support = torch.cat([self._draw(pool, every + 4, k), self._draw(pool, every, k)], 1)  # [tasks, 2k]
        query = torch.cat(
            [
                self._draw(pool, every, q),  # all three literals
                self._draw(pool, 1 + order[:, 2], q),  # not the third: the truth's positives only
                self._draw(pool, 1 + order[:, 1], q),  # not the second
                self._draw(pool, 1 + order[:, 0], q),  # not the first
                self._draw(pool, every + 4, q),
            ],
            1,
        )  # at most one: negative for all three
        hypotheses = torch.tensor(
            [
                [
                    _HYPOTHESIS_INDEX[tuple(sorted(tuple(map(int, lit[i])) for i in pair))]
                    for pair in ((0, 1), (0, 2), (1, 2))
                ]
                for lit in literals
            ]
        )
        y_hypotheses = _GROUP_LABELS.repeat_interleave(q, 1).expand(tasks, -1, -1)  # [tasks, 3, 5q]
        y_support = torch.cat([torch.zeros(k, dtype=torch.long), torch.ones(k, dtype=torch.long)]).expand(tasks, -1)
        dev = self.device
        return AmbiguousEpisodes(
            x_support=self.inputs[support.to(dev)],
            y_support=y_support.contiguous().to(dev),
            x_query=self.inputs[query.to(dev)],
            y_query=y_hypotheses[:, 0].contiguous().to(dev),
            y_hypotheses=y_hypotheses.contiguous().to(dev),
            hypotheses=hypotheses.to(dev),
            literals=literals.to(dev),
        )


# ----------------------------------------------------------------------------- scores


def hypothesis_scores(logits: torch.Tensor, y_hypotheses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL and accuracy (%) of each sampled classifier under each consistent hypothesis's labels.

    ``logits`` ``[samples, tasks, n, 2]``, ``y_hypotheses`` ``[tasks, 3, n]`` -> two ``[samples, tasks, 3]``.
    """
    if (
        logits.dim() != 4
        or y_hypotheses.dim() != 3
        or logits.shape[1:3] != (y_hypotheses.shape[0], y_hypotheses.shape[2])
    ):
        raise ValueError(
            f"logits must be [samples, tasks, n, 2] and labels [tasks, 3, n]; got {tuple(logits.shape)} "
            f"and {tuple(y_hypotheses.shape)}"
        )
    log_p = torch.log_softmax(logits.float(), -1)[:, :, None]  # [S, T, 1, n, 2]
    y = y_hypotheses[None, ..., None].expand(logits.shape[0], -1, -1, -1, -1)  # [S, T, 3, n, 1]
    nll = -torch.gather(log_p.expand(-1, -1, 3, -1, -1), -1, y)[..., 0].mean(-1)
    acc = (logits.argmax(-1)[:, :, None] == y_hypotheses[None]).float().mean(-1) * 100
    return nll, acc


def coverage_count(nll: torch.Tensor) -> torch.Tensor:
    """How many hypotheses are the closest match of at least one sample: ``[samples, tasks, H]`` NLLs -> ``[tasks]``."""
    matched = nll.argmin(-1)  # [S, T]: the hypothesis each sample gives the highest likelihood
    return F.one_hot(matched, nll.shape[-1]).amax(0).sum(-1)


def ambiguity_scores(logits: torch.Tensor, tasks: AmbiguousEpisodes) -> dict[str, torch.Tensor]:
    """Per-task coverage, accuracy and NLL of a set of sampled classifiers (the paper's table, section 5.2).

    Each sampled classifier is matched to the consistent hypothesis whose labels it gives
    the highest likelihood. **Coverage**: how many of the three hypotheses are matched by
    at least one sample (at most 3; one deterministic classifier always scores 1).
    **Accuracy** (%): each sample's accuracy under the hypothesis it matched, averaged over
    the samples. **NLL**: the negative log-likelihood of the true hypothesis's labels
    under the average of the samples' predicted probabilities (the model average),
    per query image. Returns ``{"coverage", "accuracy", "nll"}``, each ``[tasks]`` on the CPU.
    """
    nll, acc = hypothesis_scores(logits, tasks.y_hypotheses)  # [S, T, 3]
    matched = nll.argmin(-1)  # [S, T]
    covered = coverage_count(nll)  # [T]
    accuracy = torch.gather(acc, -1, matched[..., None])[..., 0].mean(0)
    average = torch.softmax(logits.float(), -1).mean(0)  # [T, n, 2]
    true_nll = -torch.log(torch.gather(average, -1, tasks.y_query[..., None])[..., 0].clamp_min(1e-12)).mean(-1)
    return {"coverage": covered.float().cpu(), "accuracy": accuracy.cpu(), "nll": true_nll.cpu()}
