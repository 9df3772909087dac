"""PLATIPUS's experiments (Finn, Xu & Levine 2018, section 5): sampled models on ambiguous tasks.

* **Lines or sines** (:func:`kinds_of_samples`, :func:`both_kinds`): do the models sampled
  for one ambiguous task include a line *and* a sinusoid (each a good fit of its shape)?
* **Active learning** (:func:`active_learning_curves`): ask for the label of the x where
  the sampled functions disagree most, against a random x, and follow the error as the
  labels reweight the samples.
* **Ambiguous glyphs** (:class:`AmbiguousGlyphSettings`, :func:`prepare_glyphs`,
  :func:`evaluate_ambiguous`): coverage, accuracy and NLL of the sampled classifiers of any
  method (PLATIPUS, MAML, MAML + noise) on the same tasks. Quick mode puts a frozen
  :func:`attribute_encoder` under the meta-learned classifier.

Every "method" here is a function ``models(x_support, y_support, n_samples) -> outputs`` on
the query inputs, so that the three methods are scored by the same code on the same tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.algorithms.platipus import PLATIPUS, _check_common, forward_samples, noisy_maml_models
from metaedu.data.base import to_float
from metaedu.nn.backbones import MLP, Conv4
from metaedu.tasks.ambiguous import AmbiguousGlyphTasks, ambiguity_scores, glyph_attributes
from metaedu.tasks.ambiguous_regression import LINE, MIN_FIT, SINE, curve_kinds
from metaedu.training import History, train

#: ``predict(x_support, y_support, x_query) -> [samples, tasks, n_query, out]``: a method's sampled models.
SamplePredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- settings


@dataclass
class AmbiguousGlyphSettings:
    """PLATIPUS on ambiguous 5-shot glyph classification (the paper's ambiguous celebA, :mod:`metaedu.tasks.ambiguous`).

    Full mode is the paper's setting: Conv4 on the pixels, meta-trained end to end. Quick mode
    (``encoder="attributes"``) puts a frozen Conv4 under a small classifier: it is trained once,
    as a plain network, to tell the three attributes of meta-training images
    (:func:`metaedu.algorithms.ambiguity.attribute_encoder`), and PLATIPUS and MAML then meta-learn
    a one-hidden-layer classifier on its features. They still have to learn which attribute pairs
    make tasks and how to adapt; they no longer have to learn to see. Quick mode's inner step and
    KL weight were chosen on the validation alphabets (``benchmarks/platipus_validation.py glyphs``):
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

    def __post_init__(self) -> None:
        _check_common(self)
        if self.encoder not in ("none", "attributes"):
            raise ValueError(f"encoder must be 'none' (Conv4 on pixels) or 'attributes', got {self.encoder!r}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 (Conv4 halves it four times), got {self.image_size}")
        if not self.noise_stds or min(self.noise_stds) <= 0:
            raise ValueError(f"noise_stds must be positive noise levels, got {self.noise_stds}")
        for name in ("k_shot", "n_query", "eval_query", "hidden", "head_hidden", "encoder_epochs", "val_tasks",
                     "eval_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")

    @classmethod
    def quick(cls) -> "AmbiguousGlyphSettings":
        return cls(encoder="attributes", image_size=16, hidden=32, inner_lr=0.5, outer_lr=0.003, kl_weight=0.02,
                   steps=1500, val_tasks=200, eval_tasks=300)

    @classmethod
    def full(cls) -> "AmbiguousGlyphSettings":
        return cls()


def glyph_network(settings: AmbiguousGlyphSettings, in_features: int | None = None) -> nn.Module:
    """The classifier: Conv4 with a 2-way head on pixels, or an MLP on ``in_features`` encoder features."""
    if settings.encoder == "attributes":
        if in_features is None:
            raise ValueError("encoder='attributes' needs in_features, the size of the encoder's features")
        return MLP((in_features, settings.head_hidden, 2))
    return Conv4(1, settings.hidden, 2, track_running_stats=False, image_size=settings.image_size)


def glyph_learner(settings: AmbiguousGlyphSettings, in_features: int | None = None, device="cpu") -> PLATIPUS:
    """:func:`glyph_network` as mu_theta, with PLATIPUS's variances and step sizes."""
    return PLATIPUS(glyph_network(settings, in_features), "cross_entropy", settings.inner_lr,
                    settings.init_log_var).to(device)


# ----------------------------------------------------------------------------- lines or sines


def kinds_of_samples(curves: torch.Tensor, x: torch.Tensor, min_fit: float = MIN_FIT) -> torch.Tensor:
    """``[samples, tasks]`` :func:`~metaedu.tasks.ambiguous_regression.curve_kinds` of sampled curves
    ``[samples, tasks, n]`` on inputs ``x`` ``[n]``: LINE, SINE or NEITHER."""
    return curve_kinds(x.cpu(), curves.cpu(), min_fit)


def both_kinds(kinds: torch.Tensor) -> torch.Tensor:
    """Per task (``[tasks]`` float, 1 or 0): do the samples include at least one line and one sinusoid?"""
    return ((kinds == LINE).any(0) & (kinds == SINE).any(0)).float()


def active_learning_curves(samples: torch.Tensor, truth: torch.Tensor, added: int, noise_std: float,
                           generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Error after labelling 0, 1, ..., ``added`` more points, chosen two ways, on the same tasks.

    ``samples`` ``[S, tasks, n]``: sampled functions (already adapted to each task's training points)
    at ``n`` candidate inputs; ``truth`` ``[tasks, n]``: the true function there. The samples are
    the hypotheses: each labelled point ``y = truth + noise`` reweights them by its likelihood
    ``N(y; f_s(x), noise_std^2)`` (Bayes' rule over the samples), and the prediction is their
    weighted mean. Rules:

    * ``"active"``: label the candidate where the (weighted) samples' variance is largest;
    * ``"random"``: label a candidate drawn uniformly at random.

    The error is the mean squared error of the prediction over all candidates. Returns
    ``{"active", "random"}``, each ``[added + 1, tasks]``.
    """
    if samples.dim() != 3 or truth.shape != samples.shape[1:]:
        raise ValueError(f"samples must be [S, tasks, n] and truth [tasks, n], got {tuple(samples.shape)} and "
                         f"{tuple(truth.shape)}")
    if noise_std <= 0:
        raise ValueError(f"noise_std must be positive (it sets the likelihood of a label), got {noise_std}")
    f, truth = samples.double().cpu(), truth.double().cpu()
    n_samples, tasks, n = f.shape
    rows = torch.arange(tasks)
    curves = {}
    for rule in ("active", "random"):
        log_w = torch.zeros(n_samples, tasks, dtype=torch.float64)
        errors = []
        for step in range(added + 1):
            w = torch.softmax(log_w, 0)[..., None]  # [S, tasks, 1]
            mean = (w * f).sum(0)  # [tasks, n]
            errors.append(((mean - truth) ** 2).mean(1).float())
            if step == added:
                break
            if rule == "active":
                pick = (w * (f - mean) ** 2).sum(0).argmax(1)  # [tasks]: the largest disagreement
            else:
                pick = torch.randint(n, (tasks,), generator=generator)
            y = truth[rows, pick] + noise_std * torch.randn(tasks, generator=generator, dtype=torch.float64)
            log_w = log_w - 0.5 * ((f[:, rows, pick] - y) / noise_std) ** 2  # Bayes: times the label's likelihood
        curves[rule] = torch.stack(errors)
    return curves


# ----------------------------------------------------------------------------- ambiguous glyphs


def _images(images: torch.Tensor, size: int) -> torch.Tensor:
    x = to_float(images)
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def attribute_encoder(images: torch.Tensor, values: torch.Tensor, size: int = 16, hidden: int = 32, epochs: int = 3,
                      batch_size: int = 128, lr: float = 3e-3, device="cpu", seed: int = 0,
                      progress: bool = True) -> tuple[Conv4, History]:
    """Quick mode's frozen image encoder: Conv4 trained to tell the three attributes of meta-training images.

    A plain supervised network (binary cross-entropy per attribute, undefined values
    masked out) on ``images`` ``[N, 1, H, W]`` resized to ``size``; its features (the
    layer before the attribute scores) are what the quick-mode classifiers see. Only
    meta-training images may be given. Returns the network (eval mode, frozen) and its history.
    """
    if images.shape[0] != values.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {values.shape[0]} rows of attribute values")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Conv4(images.shape[1], hidden, values.shape[1], image_size=size).to(device)
    x = _images(images, size).to(device)
    target = values.clamp_min(0).float().to(device)
    known = (values >= 0).float().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    per_epoch = max(1, len(x) // batch_size)
    order = torch.randperm(len(x), generator=g)

    def step(i: int) -> dict:
        nonlocal order
        if i % per_epoch == 0 and i:
            order = torch.randperm(len(x), generator=g)
        idx = order[(i % per_epoch) * batch_size: (i % per_epoch + 1) * batch_size].to(device)
        logits = net(x[idx])
        loss = (F.binary_cross_entropy_with_logits(logits, target[idx], reduction="none") * known[idx]).sum() \
            / known[idx].sum().clamp_min(1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        right = ((logits > 0).float() == target[idx]).float() * known[idx]
        return {"loss": loss.detach(), "accuracy": right.sum() / known[idx].sum().clamp_min(1) * 100}

    net.train()
    history = train(step, epochs * per_epoch, state={"net": net, "opt": opt}, progress=progress,
                    desc="attribute encoder")
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, history


@torch.no_grad()
def encode(net: Conv4, images: torch.Tensor, size: int, batch: int = 2048) -> torch.Tensor:
    """Features of ``images`` ``[N, C, H, W]`` under a frozen encoder: ``[N, D]`` (attribute scores dropped)."""
    device = next(net.parameters()).device
    out = [net.features(_images(images[i: i + batch], size).to(device)).flatten(1) for i in range(0, len(images), batch)]
    return torch.cat(out)


def nearest_prototype(x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor,
                      n_classes: int = 2) -> torch.Tensor:
    """The simplest baseline on the same inputs: each class is the mean of its support inputs (flattened),
    scored by minus the squared distance. One deterministic classifier: ``[1, tasks, n_query, n_classes]``."""
    zs, zq = x_support.flatten(2).float(), x_query.flatten(2).float()  # [tasks, k, D], [tasks, n, D]
    onehot = F.one_hot(y_support, n_classes).float()  # [tasks, k, C]
    centres = onehot.transpose(1, 2) @ zs / onehot.sum(1)[..., None].clamp_min(1)  # [tasks, C, D]
    return -torch.cdist(zq, centres).pow(2)[None]


def evaluate_ambiguous(predict: SamplePredictor, sampler: AmbiguousGlyphTasks, n_tasks: int,
                       batch: int = 100) -> dict[str, torch.Tensor]:
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
        images[split], values[split] = s.images[usable], v[usable]
    if settings.encoder == "none":
        return AmbiguousGlyphData({k: _images(x, settings.image_size) for k, x in images.items()}, values)
    net, history = attribute_encoder(images["train"], values["train"], settings.image_size, settings.hidden,
                                     settings.encoder_epochs, device=device, seed=seed, progress=progress)
    features = {k: encode(net, x, settings.image_size).cpu() for k, x in images.items()}
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
    plain = evaluate_ambiguous(lambda xs, ys, xq: maml.predict(xs, ys, xq, steps)[None], sampler_factory(),
                               settings.val_tasks)
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
