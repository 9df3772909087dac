"""MANN episodes: a stream of images whose labels arrive one step late (Santoro et al. 2016).

An episode draws ``n_classes`` classes and ``per_class`` images of each (through
:class:`metaedu.tasks.episodes.EpisodeSampler`, so the classes, their labels and
the images are shuffled from episode to episode) and presents the
``T = n_classes * per_class`` images in a random order. At step ``t`` the network
receives the image ``x_t`` together with the label of the *previous* image:

    (x_1, null), (x_2, y_1), ..., (x_T, y_{T-1})

and must output ``y_t``. The first time a class appears its label is unknown,
so the best guess is chance; from the second instance on, a network that bound
``x_s`` to ``y_s`` when ``y_s`` arrived can answer. Accuracy is therefore
reported per *instance* (the 1st, 2nd, ... time a class is seen in the episode).

**Labels.** One-hot labels (``label_length=1``: one character from an alphabet
of ``n_classes`` symbols), or the paper's strings (``label_length=5``: five
characters from an alphabet of 5, i.e. 3125 possible labels, assigned to the
episode's classes at random without repeats). A label is always a row of
``label_length`` characters, so the two cases share one code path; the network
sees the concatenated one-hot codes of the characters and predicts each
character with its own softmax.

Shapes of a :class:`Sequences` batch (``B`` episodes, ``T`` steps, ``D`` pixels):

* ``x``: ``[B, T, D]`` images, flattened, in [0, 1]
* ``y``: ``[B, T]`` the class label within the episode (0 .. n_classes - 1)
* ``targets``: ``[B, T, L]`` the characters of that label (L = ``label_length``)
* ``label_in``: ``[B, T, L * S]`` the one-hot code of the previous step's label (zeros at t = 0)
* ``instance``: ``[B, T]`` 1 for the first time a class appears, 2 for the second, ...
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from metaedu.data.base import ClassImageSet, to_float
from metaedu.data.embedded import embed_set
from metaedu.runtime import get_device
from metaedu.tasks.episodes import EpisodeSampler


@dataclass
class Sequences:
    """A batch of MANN episodes (see the module docstring for the shapes)."""

    x: torch.Tensor
    y: torch.Tensor
    targets: torch.Tensor
    label_in: torch.Tensor
    instance: torch.Tensor
    n_classes: int
    label_length: int
    label_size: int

    @property
    def episodes(self) -> int:
        return self.x.shape[0]

    @property
    def length(self) -> int:
        return self.x.shape[1]

    @property
    def inputs(self) -> torch.Tensor:
        """What the network sees at each step: image and previous label, ``[B, T, D + L * S]``."""
        return torch.cat([self.x, self.label_in], dim=-1)

    def episode(self, i: int) -> "Sequences":
        """Episode ``i`` alone, with a leading episode dimension of 1."""
        sl = slice(i, i + 1)
        return Sequences(self.x[sl], self.y[sl], self.targets[sl], self.label_in[sl], self.instance[sl],
                         self.n_classes, self.label_length, self.label_size)


def encode_labels(targets: torch.Tensor, label_size: int) -> torch.Tensor:
    """Characters ``[..., L]`` -> concatenated one-hot codes ``[..., L * label_size]``."""
    return F.one_hot(targets, label_size).flatten(-2).float()


def offset_labels(targets: torch.Tensor, label_size: int) -> torch.Tensor:
    """The network's label input: step t gets the code of y_{t-1}; step 0 gets zeros (null).

    ``targets``: ``[B, T, L]`` -> ``[B, T, L * label_size]``.
    """
    codes = encode_labels(targets, label_size)  # [B, T, L * S]
    return torch.cat([torch.zeros_like(codes[:, :1]), codes[:, :-1]], dim=1)


def instance_numbers(y: torch.Tensor) -> torch.Tensor:
    """How many times each step's class has appeared up to and including that step (1-based).

    ``y``: ``[B, T]`` integer labels -> ``[B, T]``.
    """
    n = int(y.max()) + 1
    seen = F.one_hot(y, n).cumsum(1)  # [B, T, n] running count per class
    return torch.gather(seen, 2, y.unsqueeze(-1)).squeeze(-1)


def _resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """``[n, C, H, W]`` float images -> ``[n, C, size, size]`` by area averaging."""
    return torch.cat([F.interpolate(images[i:i + chunk], size=(size, size), mode="area")
                      for i in range(0, len(images), chunk)])


class SequenceSampler:
    """Draws batches of MANN episodes from a class-indexed image set.

    Args:
        data: the images (e.g. ``load_glyphs().split("background")``).
        n_classes: classes per episode (5 or 15 in the paper).
        per_class: images of each class in an episode (at most the images per class of ``data``);
            the episode has ``n_classes * per_class`` steps.
        image_size: images are resized to this side (the paper used 20 x 20) before flattening.
        label_length: 1 for one-hot labels, 5 for the paper's five-character strings.
        rotations: angles (multiples of 90) that make new classes, as in the paper's augmentation.
        device: where the sequences are put.
        seed: seeds this sampler's generators (the global RNG is never touched).
    """

    def __init__(
        self,
        data: ClassImageSet,
        n_classes: int = 5,
        per_class: int = 10,
        image_size: int = 20,
        label_length: int = 1,
        rotations: tuple[int, ...] = (0,),
        device: str | torch.device = "cpu",
        seed: int = 0,
        encoder=None,
    ) -> None:
        if encoder is not None and not callable(encoder):
            raise ValueError(f"encoder must be a callable images [n, C, H, W] -> features [n, D], got {type(encoder).__name__}")
        if int(image_size) != image_size or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if label_length not in (1, 5):
            raise ValueError(f"label_length must be 1 (one-hot labels) or 5 (five-character strings), got {label_length!r}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes!r}")
        if label_length == 5 and n_classes > 5**5:
            raise ValueError(f"only 3125 distinct five-character labels exist; n_classes={n_classes} is too many")
        fewest = int(data.counts().min())
        if int(per_class) != per_class or not 1 <= per_class <= fewest:
            raise ValueError(f"per_class must be an integer in 1..{fewest} ({data.name} has {fewest} images in its "
                             f"smallest class), got {per_class!r}")
        self.n_classes, self.per_class = int(n_classes), int(per_class)
        self.image_size = int(image_size)
        self.label_length = int(label_length)
        self.label_size = self.n_classes if label_length == 1 else 5
        self.device = get_device(device)  # a device this machine lacks is a clear error
        self.generator = torch.Generator().manual_seed(seed + 104729)
        # optional fixed image encoder (quick-mode simplification): the full-size images go through it
        # instead of being resized and flattened; its output length replaces image_size ** 2
        self.encoder = encoder
        self.feature_size = None
        if encoder is not None:
            with torch.no_grad():
                probe = encoder(torch.zeros(1, *data.image_shape, device=self.device))
            if probe.dim() != 2 or probe.shape[0] != 1:
                raise ValueError(f"encoder must map [n, C, H, W] to [n, D], got output shape {tuple(probe.shape)}")
            self.feature_size = int(probe.shape[1])
        # The images are fixed, so they are prepared once here rather than at every draw: resized
        # (area averaging commutes with the 90-degree rotations of square images), or, without
        # rotations, put through the encoder ([n, D] stored as [n, D, 1, 1] images).
        self.prepared = "none"
        if encoder is None and data.image_shape[-2:] != (self.image_size, self.image_size):
            data = replace(data, images=_resize(to_float(data.images), self.image_size))
            self.prepared = "resized"
        elif encoder is not None and tuple(int(r) % 360 for r in rotations) == (0,):
            data = embed_set(encoder, data, self.device)
            self.prepared = "encoded"
        # one image sampler does the drawing: n_classes "ways", per_class "shots", no queries
        self.episodes = EpisodeSampler(data, n_way=n_classes, k_shot=per_class, n_query=0,
                                       rotations=rotations, device=device, seed=seed)

    @property
    def length(self) -> int:
        return self.n_classes * self.per_class

    @property
    def input_size(self) -> int:
        """Size of one step's input: pixels (or encoder features) plus the label code."""
        image = self.image_size**2 if self.encoder is None else self.feature_size
        return image + self.label_length * self.label_size

    def _strings(self, episodes: int) -> torch.Tensor:
        """Distinct random five-character strings for each episode's classes, ``[B, n_classes, 5]``."""
        keys = torch.rand(episodes, 5**5, generator=self.generator)
        codes = keys.argsort(1)[:, : self.n_classes]  # [B, n_classes] distinct numbers < 5^5
        digits = torch.stack([(codes // 5**p) % 5 for p in range(5)], dim=-1)
        return digits.to(self.device)

    def sample(self, episodes: int = 1) -> Sequences:
        """Draw ``episodes`` sequences at once."""
        if episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        eps = self.episodes.sample(episodes)
        x = eps.x_support  # [B, T, C, H, W], class-major, labels already random per episode
        y = eps.y_support  # [B, T]
        B, T = y.shape
        # present the images in a random order
        order = torch.rand(B, T, generator=self.generator).argsort(1).to(self.device)  # [B, T]
        x = x[torch.arange(B, device=self.device)[:, None], order]
        y = torch.gather(y, 1, order)
        if self.encoder is not None and self.prepared != "encoded":  # rotated images: encoded as drawn
            with torch.no_grad():
                x = self.encoder(x.reshape(B * T, *x.shape[2:])).reshape(B, T, -1)  # [B, T, D]
        x = x.reshape(B, T, -1)  # [B, T, D]
        if self.label_length == 1:
            targets = y.unsqueeze(-1)  # [B, T, 1]
        else:
            strings = self._strings(B)  # [B, n_classes, 5]
            targets = torch.gather(strings, 1, y.unsqueeze(-1).expand(-1, -1, 5))  # [B, T, 5]
        return Sequences(
            x=x,
            y=y,
            targets=targets,
            label_in=offset_labels(targets, self.label_size),
            instance=instance_numbers(y),
            n_classes=self.n_classes,
            label_length=self.label_length,
            label_size=self.label_size,
        )
