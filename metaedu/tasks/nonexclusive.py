"""Non-mutually-exclusive task families (Yin et al. 2020), each with a switch that makes them exclusive.

Tasks are *mutually exclusive* when no single function solves all of them: the
support set is needed to know which task one is in. They are *non-mutually-exclusive*
when the test input alone tells the task, so a meta-learner can memorise a function
that solves every meta-training task and ignore the support set ("memorization").
Three families, each drawn as a batch with a leading task dimension:

* **Glyph pose regression** (:class:`GlyphPoseTasks`), the analogue of the paper's
  3-D object pose task. A task is one glyph character, drawn once (one drawer) and
  rendered at ``k_shot + n_query`` random rotations. The target is the rotation
  *relative to that character's own canonical orientation*, a fixed random offset
  per character: the image is the glyph turned by ``a + offset[c]`` degrees, the
  target is ``a`` (in the paper's units, ``10 * a / 360``, so 0..10 for a full turn).
  On the training characters a network can learn each offset and never look at
  the support set; on new characters it has to read the offset off the support
  set. ``mutually_exclusive=True`` draws a new offset for every task, so nothing
  about the offset can be memorised.
* **Non-mutually-exclusive glyph classification** (:func:`glyph_classification`):
  N-way K-shot episodes in which every class keeps one label across all episodes
  (label shuffling off), from :class:`~metaedu.tasks.episodes.EpisodeSampler`.
* **Sinusoids with the task's identity in the input** (:class:`OneHotSinusoidTasks`):
  ``y = A sin(u) + noise``, the amplitude ``A`` one of 20 fixed values, and the input
  ``x = (u, one-hot code of A)``. At test time ``A`` is drawn from the whole interval
  and the code is a random one-hot vector, as in the paper.

**Symmetric glyphs.** A glyph that looks the same after a turn (an "O", an "X", an
"S" turned by 180 degrees) has no well-defined rotation: two images that are equal
pixel for pixel carry different targets, and no predictor can reach zero error. The
paper removed its two symmetric object classes (bottle and train) for this reason.
:func:`rotational_symmetry` scores each character by the best correlation between
its drawing and the drawing turned by any angle between ``SYMMETRY_MIN_ANGLE`` and
``360 - SYMMETRY_MIN_ANGLE`` degrees; :class:`GlyphPoseTasks` leaves out the
characters scoring above ``symmetry_threshold``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaedu.data.base import ClassImageSet, to_float
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.tasks.regression import RegressionTasks, _check

#: Target units: a full turn is 10, as in the paper's pose data (azimuth / 2 pi * 10).
POSE_SCALE = 10.0
#: Turns smaller than this (degrees) are not counted as a symmetry: every image resembles itself turned by 1 degree.
SYMMETRY_MIN_ANGLE = 30.0
#: Characters whose drawing correlates above this with a turned copy of itself are left out of pose tasks.
SYMMETRY_THRESHOLD = 0.72
#: The paper's 20 training amplitudes, equally spaced from 0.1 to 4.
ONE_HOT_AMPLITUDES = (0.1, 4.0)
#: The paper's sinusoid inputs u and label noise.
ONE_HOT_INPUT_RANGE = (-5.0, 5.0)
ONE_HOT_NOISE = 0.1


# ----------------------------------------------------------------------------- rotating images


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Turn each image counter-clockwise by its angle (bilinear, empty corners stay 0).

    ``images`` ``[N, C, H, W]`` (float), ``degrees`` ``[N]`` -> ``[N, C, H, W]``.
    """
    if images.dim() != 4 or degrees.shape != images.shape[:1]:
        raise ValueError(f"need images [N, C, H, W] and one angle per image, got {tuple(images.shape)} "
                         f"and {tuple(degrees.shape)}")
    t = torch.deg2rad(degrees.to(images.dtype))
    cos, sin = torch.cos(t), torch.sin(t)
    zero = torch.zeros_like(cos)
    # affine_grid maps output coordinates to input ones, so the inverse turn (by -t) goes here;
    # with y pointing down on the screen, this matrix turns the picture counter-clockwise by t
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)  # [N, 2, 3]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotational_symmetry(images: torch.Tensor, step: float = 5.0) -> torch.Tensor:
    """How symmetric under turns each image is: the best correlation with itself turned by 30..330 degrees.

    ``images`` ``[N, 1, H, W]`` -> ``[N]`` in [-1, 1]; about 1 for a glyph with a rotational symmetry.
    """
    x = to_float(images)
    angles = torch.arange(SYMMETRY_MIN_ANGLE, 360.0 - SYMMETRY_MIN_ANGLE + 1e-6, step)
    flat = x.flatten(1)
    centred = flat - flat.mean(1, keepdim=True)
    best = torch.full((x.shape[0],), -1.0)
    for a in angles:
        turned = rotate(x, torch.full((x.shape[0],), float(a))).flatten(1)
        turned = turned - turned.mean(1, keepdim=True)
        corr = (centred * turned).sum(1) / (centred.norm(dim=1) * turned.norm(dim=1)).clamp_min(1e-8)
        best = torch.maximum(best, corr)
    return best


# ----------------------------------------------------------------------------- glyph pose regression


class GlyphPoseTasks:
    """Pose regression on glyphs: predict each image's turn relative to its character's canonical orientation.

    Args:
        data: the characters (e.g. ``load_glyphs().split("background")``); each task uses one class.
        k_shot, n_query: rotated images in the support and the query set (the paper: 15 and 15).
        angle_range: relative turns are drawn from [0, angle_range) degrees (360: the whole circle).
        mutually_exclusive: draw a new offset for every task (nothing to memorise) instead of one per character.
        drawings: use only each character's first ``drawings`` drawings (1: one fixed drawing per character,
            like the paper's one CAD model per object); ``None`` uses them all.
        symmetry_threshold: leave out characters whose first drawing scores above this in
            :func:`rotational_symmetry` (``None`` keeps them all).
        device: where the task tensors go; seed: this sampler's own generator.
        offset_seed: seeds the characters' canonical offsets (fixed for the life of the data).
    Shapes: ``x`` ``[tasks, n, 1, H, W]``, ``y`` ``[tasks, n, 1]``; ``params`` holds ``character``,
    ``drawing`` (the image index), ``offset`` and ``angle`` (the relative turns, degrees, ``[tasks, k + q]``).
    """

    def __init__(self, data: ClassImageSet, k_shot: int = 15, n_query: int = 15, angle_range: float = 360.0,
                 mutually_exclusive: bool = False, drawings: int | None = None,
                 symmetry_threshold: float | None = SYMMETRY_THRESHOLD, device="cpu", seed: int = 0,
                 offset_seed: int = 0) -> None:
        _check(1, k_shot, n_query)
        if not 0 < angle_range <= 360:
            raise ValueError(f"angle_range must be in (0, 360] degrees, got {angle_range!r}")
        if symmetry_threshold is not None and not -1 <= symmetry_threshold <= 1:
            raise ValueError(f"symmetry_threshold is a correlation in [-1, 1] (or None), got {symmetry_threshold!r}")
        self.data, self.k_shot, self.n_query = data, int(k_shot), int(n_query)
        self.angle_range, self.mutually_exclusive = float(angle_range), bool(mutually_exclusive)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.rand(data.n_classes, generator=torch.Generator().manual_seed(offset_seed + 104729)) * 360
        order = torch.argsort(data.targets, stable=True)
        counts = data.counts()
        if int(counts.min()) < 1:
            raise ValueError(f"{data.name}: every character needs at least one drawing")
        if drawings is not None:
            if int(drawings) != drawings or drawings < 1:
                raise ValueError(f"drawings must be a positive integer or None, got {drawings!r}")
        self.first = torch.cumsum(counts, 0) - counts  # where each class's images start in `order`
        if drawings is not None:
            counts = counts.clamp(max=int(drawings))
        self.order, self.counts = order, counts
        self.symmetry = rotational_symmetry(data.images[order[self.first]])  # [n_classes]
        keep = torch.ones(data.n_classes, dtype=torch.bool)
        if symmetry_threshold is not None:
            keep = self.symmetry <= symmetry_threshold
        self.characters = torch.nonzero(keep).flatten()  # the classes tasks are drawn from
        if len(self.characters) == 0:
            raise ValueError(f"{data.name}: every character scores above symmetry_threshold={symmetry_threshold}")
        self.images = to_float(data.images)

    @property
    def left_out(self) -> int:
        """How many characters were left out as rotationally symmetric."""
        return self.data.n_classes - len(self.characters)

    def sample(self, tasks: int = 1) -> RegressionTasks:
        _check(tasks, self.k_shot, self.n_query)
        g, n = self.generator, self.k_shot + self.n_query
        character = self.characters[torch.randint(len(self.characters), (tasks,), generator=g)]  # [tasks]
        drawing = self.order[self.first[character] + (torch.rand(tasks, generator=g) * self.counts[character]).long()]
        if self.mutually_exclusive:
            offset = torch.rand(tasks, generator=g) * 360
        else:
            offset = self.offsets[character]
        angle = torch.rand(tasks, n, generator=g) * self.angle_range  # [tasks, k + q], relative turns
        source = self.images[drawing].unsqueeze(1).expand(-1, n, -1, -1, -1).flatten(0, 1)  # [tasks * n, 1, H, W]
        x = rotate(source, (angle + offset[:, None]).flatten()).view(tasks, n, *source.shape[1:])
        y = (angle * POSE_SCALE / 360.0).unsqueeze(-1)  # [tasks, k + q, 1]
        x, y, k = x.to(self.device), y.to(self.device), self.k_shot
        params = {"character": character, "drawing": drawing, "offset": offset, "angle": angle}
        return RegressionTasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:], params)


# ----------------------------------------------------------------------------- glyph classification


def glyph_classification(data: ClassImageSet, n_way: int, k_shot: int, n_query: int,
                         mutually_exclusive: bool = False, device="cpu", seed: int = 0) -> EpisodeSampler:
    """N-way K-shot glyph episodes; non-mutually-exclusive (one fixed label per class) unless asked otherwise.

    With ``mutually_exclusive=False`` the classes are split once into ``n_way`` groups and a
    class's label is its group in every episode, so a network can learn the label of each
    training class and ignore the support set; ``True`` shuffles labels per episode (the usual
    few-shot protocol).
    """
    return EpisodeSampler(data, n_way, k_shot, n_query, shuffle_labels=mutually_exclusive, device=device, seed=seed)


# ----------------------------------------------------------------------------- one-hot sinusoids


class OneHotSinusoidTasks:
    """Sinusoids ``y = A sin(u) + N(0, 0.1^2)`` whose input carries a one-hot code of the amplitude.

    Args:
        k_shot, n_query: points in the support and the query set.
        n_amplitudes: the training amplitudes are ``n_amplitudes`` equally spaced values in [0.1, 4].
        test: draw ``A`` uniformly from [0.1, 4] and give a random one-hot code (the paper's meta-test).
        mutually_exclusive: in training too, the code is random, so it says nothing about ``A``.
    Shapes: ``x`` ``[tasks, n, 1 + n_amplitudes]`` (``u`` first), ``y`` ``[tasks, n, 1]``; ``params``
    holds ``amplitude`` and ``code`` (the index of the hot entry).
    """

    def __init__(self, k_shot: int = 5, n_query: int = 10, n_amplitudes: int = 20, test: bool = False,
                 mutually_exclusive: bool = False, noise_std: float = ONE_HOT_NOISE, device="cpu",
                 seed: int = 0) -> None:
        _check(1, k_shot, n_query)
        if n_amplitudes < 2:
            raise ValueError(f"n_amplitudes must be at least 2, got {n_amplitudes!r}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.k_shot, self.n_query, self.n_amplitudes = int(k_shot), int(n_query), int(n_amplitudes)
        self.test, self.mutually_exclusive, self.noise_std = bool(test), bool(mutually_exclusive), float(noise_std)
        self.amplitudes = torch.linspace(*ONE_HOT_AMPLITUDES, self.n_amplitudes)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def x_dim(self) -> int:
        return 1 + self.n_amplitudes

    def sample(self, tasks: int = 1) -> RegressionTasks:
        _check(tasks, self.k_shot, self.n_query)
        g, n = self.generator, self.k_shot + self.n_query
        index = torch.randint(self.n_amplitudes, (tasks,), generator=g)
        if self.test:
            low, high = ONE_HOT_AMPLITUDES
            amplitude = low + (high - low) * torch.rand(tasks, generator=g)
        else:
            amplitude = self.amplitudes[index]
        code = torch.randint(self.n_amplitudes, (tasks,), generator=g) if (self.test or self.mutually_exclusive) else index
        low, high = ONE_HOT_INPUT_RANGE
        u = low + (high - low) * torch.rand(tasks, n, 1, generator=g)
        y = amplitude[:, None, None] * torch.sin(u) + self.noise_std * torch.randn(tasks, n, 1, generator=g)
        one_hot = F.one_hot(code, self.n_amplitudes).float()[:, None, :].expand(tasks, n, -1)
        x = torch.cat([u, one_hot], -1).to(self.device)
        y, k = y.to(self.device), self.k_shot
        return RegressionTasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:], {"amplitude": amplitude, "code": code})


def angle_error(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Smallest difference between two poses in target units, going round the circle (a full turn is 10)."""
    d = torch.remainder(y_pred - y_true, POSE_SCALE)
    return torch.minimum(d, POSE_SCALE - d)

