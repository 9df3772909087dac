"""PLATIPUS's image experiment on glyphs (the paper's ambiguous celebA, section 5.2): coverage, accuracy and
NLL of the sampled classifiers of any method (PLATIPUS, MAML, MAML + noise, a nearest prototype) on the
same ambiguous tasks.

Quick mode puts a frozen :func:`attribute_encoder` under the meta-learned classifier; full mode is a Conv4
on the pixels. The tasks, the attributes and the scores are in :mod:`metaedu.tasks.ambiguous`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.algorithms.platipus.core import PLATIPUS, _check_common, forward_samples, noisy_maml_models
from metaedu.algorithms.protonet import prototype_logits, prototypes
from metaedu.checkpoints import resolve
from metaedu.data.base import ClassImageSet, to_float
from metaedu.data.embedded import embed_set
from metaedu.nn.backbones import MLP, Conv4
from metaedu.runtime import check_settings, seeded
from metaedu.tasks.ambiguous import AmbiguousGlyphTasks, ambiguity_scores, glyph_attributes
from metaedu.training import History, train

#: ``predict(x_support, y_support, x_query) -> [samples, tasks, n_query, 2]``: a method's sampled classifiers.
SamplePredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class AmbiguousGlyphSettings:
    """PLATIPUS on ambiguous 5-shot glyph classification (the paper's ambiguous celebA, :mod:`metaedu.tasks.ambiguous`).

    Full mode is the paper's setting: Conv4 on the pixels, meta-trained end to end. Quick mode
    (``encoder="attributes"``) puts a frozen Conv4 under a small classifier: it is trained once,
    as a plain network, to tell the three attributes of meta-training images
    (:func:`attribute_encoder`), and PLATIPUS and MAML then meta-learn
    a one-hidden-layer classifier on its features. They still have to learn which attribute pairs
    make tasks and how to adapt; they no longer have to learn to see. Quick mode's inner step and
    KL weight were chosen on the validation alphabets (``scripts/choose_platipus_settings.py glyphs``):
    MAML was most accurate with alpha = 0.5 (of 0.3, 0.5, 1.0), and PLATIPUS with the KL weight 0.02
    lost the least accuracy (of 0.02, 0.05, 0.15).
    """

    k_shot: int = 5  # positives and negatives in the support set
    n_query: int = 5  # query images per group (5 groups) while meta-training
    eval_query: int = 5  # query images per group when scoring
    encoder: str = "none"  # "none": Conv4 on the pixels (the paper); "attributes": frozen attribute encoder + MLP
    image_size: int = 28  # pixels per side fed to Conv4 (and to the encoder)
    hidden: int = 64  # Conv4 filters (of the classifier, or of the encoder)
    head_hidden: int = 32  # hidden units of the MLP classifier on the encoder's features
    encoder_epochs: int = 3  # epochs of the attribute encoder over the meta-training images
    inner_lr: float = 0.1  # alpha
    outer_lr: float = 0.001  # Adam's step size on Theta (and on MAML's theta)
    inner_steps: int = 1  # gradient steps on D_tr while meta-training
    test_inner_steps: int = 1  # gradient steps on D_tr at meta-test time
    kl_weight: float = 0.15  # weight of KL(q || p) (the paper's table: 0.05 and 0.15)
    init_log_var: float = math.log(1e-2)  # initial log sigma2_theta and log v_q
    meta_batch: int = 16  # tasks per meta-update
    steps: int = 30000  # meta-updates (PLATIPUS and MAML alike)
    n_samples: int = 10  # classifiers sampled per task when scoring
    noise_stds: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)  # MAML + noise: levels tried on meta-validation
    noise_tolerance: float = 3.0  # ... the noisiest one whose validation accuracy stays this close to MAML's
    val_fraction: float = 0.15  # background classes (whole alphabets) held out for meta-validation
    val_tasks: int = 300  # meta-validation tasks behind the noise choice
    eval_tasks: int = 600  # test tasks behind each reported number

    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    def __post_init__(self) -> None:
        _check_common(self)
        check_settings(
            self,
            positive=(
                "k_shot",
                "n_query",
                "eval_query",
                "hidden",
                "head_hidden",
                "encoder_epochs",
                "val_tasks",
                "noise_stds",
            ),
            non_negative=("noise_tolerance",),
            choices={"encoder": ("none", "attributes")},
        )
        if self.image_size < 16:
            raise ValueError(
                f"AmbiguousGlyphSettings.image_size must be at least 16 (Conv4 halves it four times), "
                f"got {self.image_size}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"AmbiguousGlyphSettings.val_fraction must lie in (0, 1), got {self.val_fraction}")

    @classmethod
    def quick(cls) -> "AmbiguousGlyphSettings":
        return cls(
            encoder="attributes",
            image_size=16,
            hidden=32,
            inner_lr=0.5,
            outer_lr=0.003,
            kl_weight=0.02,
            steps=1500,
            val_tasks=200,
            eval_tasks=300,
        )

    @classmethod
    def full(cls) -> "AmbiguousGlyphSettings":
        return cls(checkpoint=True)


def glyph_network(settings: AmbiguousGlyphSettings, in_features: int | None = None, seed: int = 0) -> nn.Module:
    """The classifier, its weights drawn from ``seed``: Conv4 with a 2-way head on pixels, or an MLP on
    ``in_features`` encoder features (the same network for PLATIPUS and MAML)."""
    if settings.encoder == "attributes" and in_features is None:
        raise ValueError("encoder='attributes' needs in_features, the size of the encoder's features")
    with seeded(seed):
        if settings.encoder == "attributes":
            return MLP((in_features, settings.head_hidden, 2))
        return Conv4(1, settings.hidden, 2, track_running_stats=False, image_size=settings.image_size)


def glyph_learner(
    settings: AmbiguousGlyphSettings, in_features: int | None = None, device="cpu", seed: int = 0
) -> PLATIPUS:
    """:func:`glyph_network` as mu_theta, with PLATIPUS's variances and step sizes."""
    return PLATIPUS(
        glyph_network(settings, in_features, seed), "cross_entropy", settings.inner_lr, settings.init_log_var
    ).to(device)


def _images(images: torch.Tensor, size: int) -> torch.Tensor:
    x = to_float(images)
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def attribute_encoder(
    images: torch.Tensor,
    values: torch.Tensor,
    settings: AmbiguousGlyphSettings,
    device="cpu",
    seed: int = 0,
    checkpoint=None,
    progress: bool = True,
    batch_size: int = 128,
    lr: float = 3e-3,
) -> tuple[Conv4, History]:
    """Quick mode's frozen image encoder: Conv4 trained to tell the three attributes of meta-training images.

    A plain supervised network (binary cross-entropy per attribute, undefined values masked
    out) on ``images`` ``[N, 1, H, W]`` resized to ``settings.image_size``, with
    ``settings.hidden`` filters, for ``settings.encoder_epochs`` epochs. Its features (the layer
    before the attribute scores, :func:`feature_extractor`) are what the quick-mode classifiers
    see. Only meta-training images may be given. Returns the network (frozen) and its history.
    ``checkpoint``: see :func:`metaedu.checkpoints.resolve`.
    """
    if images.shape[0] != values.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {values.shape[0]} rows of attribute values")
    checkpoint = resolve(checkpoint, "attribute_encoder", settings, images, values, seed)
    size = settings.image_size
    g = torch.Generator().manual_seed(seed)
    with seeded(seed):
        net = Conv4(images.shape[1], settings.hidden, values.shape[1], image_size=size).to(device)
    x = _images(images, size).to(device)
    target = values.clamp_min(0).float().to(device)
    known = (values >= 0).float().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    per_epoch = max(1, len(x) // batch_size)
    order = torch.randperm(len(x), generator=g)

    def step(i: int) -> dict:
        if i % per_epoch == 0 and i:
            order.copy_(torch.randperm(len(x), generator=g))  # a new epoch, in place (the tensor is in the state)
        idx = order[(i % per_epoch) * batch_size : (i % per_epoch + 1) * batch_size].to(device)
        logits = net(x[idx])  # [batch, 3]
        loss = (F.binary_cross_entropy_with_logits(logits, target[idx], reduction="none") * known[idx]).sum() / known[
            idx
        ].sum().clamp_min(1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        right = ((logits > 0).float() == target[idx]).float() * known[idx]
        return {"loss": loss.detach(), "accuracy": right.sum() / known[idx].sum().clamp_min(1) * 100}

    # the epoch's permutation is in the state, so that a resumed run continues the same epoch
    history = train(
        step,
        settings.encoder_epochs * per_epoch,
        state={"net": net, "opt": opt, "sampler": g, "order": order},
        checkpoint=checkpoint,
        progress=progress,
        desc="attribute encoder",
    )
    for p in net.parameters():
        p.requires_grad_(False)
    return net, history


class _Resize(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _images(x, self.size)


def feature_extractor(net: Conv4, size: int) -> nn.Module:
    """The encoder as a module ``[N, C, H, W] -> [N, D]``: resize, the conv blocks, flatten (scores dropped)."""
    return nn.Sequential(_Resize(size), net.features, nn.Flatten())


def nearest_prototype(x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
    """The simplest baseline on the same inputs: a prototype per class (the mean of its support inputs,
    flattened) and minus the squared distance as the score. One classifier: ``[1, tasks, n_query, 2]``."""
    protos = prototypes(x_support.flatten(2).float(), y_support, 2)  # [tasks, 2, D]
    return prototype_logits(x_query.flatten(2).float(), protos)[None]


def evaluate_ambiguous(
    predict: SamplePredictor, sampler: AmbiguousGlyphTasks, n_tasks: int, batch: int = 100
) -> dict[str, torch.Tensor]:
    """Coverage, accuracy (%) and NLL per task over ``n_tasks`` tasks (:func:`ambiguity_scores`).

    Two methods given samplers with the same seed are scored on the same tasks, so their
    per-task scores can be compared pairwise.
    """
    parts: dict[str, list] = {}
    left = n_tasks
    while left > 0:
        tasks = sampler.sample(min(batch, left))
        logits = predict(tasks.x_support, tasks.y_support, tasks.x_query)  # [S, T, n, 2]
        for k, v in ambiguity_scores(logits, tasks).items():
            parts.setdefault(k, []).append(v)
        left -= tasks.tasks
    return {k: torch.cat(v) for k, v in parts.items()}


@dataclass
class AmbiguousGlyphData:
    """Inputs and attribute values of the usable images of each split: meta-train, meta-validation, test.

    ``inputs[split]`` are pixels ``[N, 1, S, S]`` (float) or standardised encoder features ``[N, D]``;
    ``values[split]`` ``[N, 3]`` the attributes of each image's character (all defined).
    """

    inputs: dict[str, torch.Tensor]
    values: dict[str, torch.Tensor]
    encoder: Conv4 | None = None
    encoder_history: History | None = None

    def sampler(self, split: str, k_shot: int, n_query: int, seed: int, device="cpu") -> AmbiguousGlyphTasks:
        if split not in self.inputs:
            raise ValueError(f"split must be one of {sorted(self.inputs)}, got {split!r}")
        return AmbiguousGlyphTasks(self.inputs[split], self.values[split], k_shot, n_query, device=device, seed=seed)

    @property
    def in_features(self) -> int | None:
        x = self.inputs["train"]
        return x.shape[1] if x.dim() == 2 else None


def prepare_glyphs(data, settings, device="cpu", seed: int = 0, progress: bool = True) -> AmbiguousGlyphData:
    """Split the glyph alphabets, label every image with its character's attributes, and make the inputs.

    Meta-training and meta-validation come from the background alphabets (whole alphabets held out,
    :func:`metaedu.algorithms.baselines.validation_split`), the test split is the evaluation alphabets.
    With ``settings.encoder == "attributes"`` an :func:`attribute_encoder` is trained on the
    meta-training images only, and every split is replaced by its features, standardised with the
    meta-training mean and spread.
    """
    from metaedu.algorithms.baselines import validation_split

    values_of_type = glyph_attributes(data.types)
    row = {t.name: i for i, t in enumerate(data.types)}
    train_set, val_set = validation_split(data.split("background"), settings.val_fraction, seed=seed)
    sets = {"train": train_set, "validation": val_set, "test": data.split("evaluation")}
    images, values = {}, {}
    for split, s in sets.items():
        v = values_of_type[[row[name] for name in s.class_names]][s.targets]  # [N, 3]
        usable = (v >= 0).all(1)
        images[split] = ClassImageSet(
            s.images[usable], s.targets[usable], s.class_names, s.groups, name=f"{s.name} (attributes defined)"
        )
        values[split] = v[usable]
    if settings.encoder == "none":
        return AmbiguousGlyphData({k: _images(x.images, settings.image_size) for k, x in images.items()}, values)
    net, history = attribute_encoder(
        images["train"].images, values["train"], settings, device=device, seed=seed, progress=progress
    )
    encoder = feature_extractor(net, settings.image_size)
    features = {k: embed_set(encoder, x, device).images.flatten(1).cpu() for k, x in images.items()}  # [N, D]
    mean, std = features["train"].mean(0), features["train"].std(0) + 1e-3
    return AmbiguousGlyphData({k: (z - mean) / std for k, z in features.items()}, values, net, history)


def choose_noise(maml, sampler_factory, settings, generator: torch.Generator) -> tuple[float, list[dict]]:
    """MAML + noise's noise level, chosen on meta-validation tasks (never the test split).

    Every level of ``settings.noise_stds`` is scored on the same validation tasks; the
    chosen one has the highest coverage among those whose accuracy is within
    ``settings.noise_tolerance`` points of MAML's own (the smallest level if none is).
    ``sampler_factory()`` returns a fresh validation sampler (same seed: same tasks).
    Returns the level and one row per level (noise, coverage, accuracy).
    """
    steps, n = settings.test_inner_steps, settings.n_samples
    plain = evaluate_ambiguous(
        lambda xs, ys, xq: maml.predict(xs, ys, xq, steps)[None], sampler_factory(), settings.val_tasks
    )
    rows = []
    for std in settings.noise_stds:

        def predict(xs, ys, xq, std=std):
            return forward_samples(maml, noisy_maml_models(maml, xs, ys, steps, n, std, generator), xq)

        r = evaluate_ambiguous(predict, sampler_factory(), settings.val_tasks)
        rows.append({"noise": std, "coverage": float(r["coverage"].mean()), "accuracy": float(r["accuracy"].mean())})
    floor = float(plain["accuracy"].mean()) - settings.noise_tolerance
    allowed = [r for r in rows if r["accuracy"] >= floor]
    best = max(allowed, key=lambda r: r["coverage"]) if allowed else rows[0]
    return best["noise"], rows
