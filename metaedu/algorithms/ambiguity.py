"""PLATIPUS's experiments (Finn, Xu & Levine 2018, section 5): sampled models on ambiguous tasks.

* **Lines or sines** (:func:`kinds_of_samples`, :func:`both_kinds`): do the models sampled
  for one ambiguous task include a line *and* a sinusoid?
* **Active learning** (:func:`active_learning_curves`): ask for the label of the x where
  the sampled functions disagree most, against a random x, and follow the error.
* **Ambiguous glyphs** (:func:`evaluate_ambiguous`): coverage, accuracy and NLL of the
  sampled classifiers of any method (PLATIPUS, MAML, MAML + noise) on the same tasks.
  Quick mode puts a frozen :func:`attribute_encoder` under the meta-learned classifier.

Every "method" here is a function ``models(x_support, y_support, n_samples) -> outputs`` on
the query inputs, so that the three methods are scored by the same code on the same tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from metaedu.data.base import to_float
from metaedu.nn.backbones import Conv4
from metaedu.tasks.ambiguous import AmbiguousGlyphTasks, ambiguity_scores, glyph_attributes
from metaedu.tasks.ambiguous_regression import function_kinds
from metaedu.training import History, train

#: ``predict(x_support, y_support, x_query) -> [samples, tasks, n_query, out]``: a method's sampled models.
SamplePredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- lines or sines


def kinds_of_samples(curves: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[samples, tasks]`` bool, True where a sampled curve (``[samples, tasks, n]`` on inputs ``x`` ``[n]``) is a line."""
    return function_kinds(x.cpu(), curves.cpu())


def both_kinds(is_line: torch.Tensor) -> torch.Tensor:
    """Per task (``[tasks]`` float, 1 or 0): do the samples include at least one line and one sinusoid?"""
    return (is_line.any(0) & (~is_line).any(0)).float()


def active_learning_curves(predict: SamplePredictor, truth: Callable[[torch.Tensor], torch.Tensor], x_support,
                           y_support, candidates: torch.Tensor, added: int, generator: torch.Generator,
                           noise_std: float = 0.0) -> dict[str, torch.Tensor]:
    """Query MSE after adding 0, 1, ..., ``added`` labelled points, chosen two ways, on the same tasks.

    * ``"active"``: the candidate x (``[n]``, shared by all tasks) where the sampled functions'
      predictions have the largest variance;
    * ``"random"``: a candidate drawn uniformly at random.

    ``truth(x)`` gives the tasks' true values at ``x`` ``[tasks, m, 1]`` (observed with
    ``noise_std`` when labelled). The error is the MSE of the samples' mean prediction over all
    candidates against the truth. Returns ``{"active", "random"}``, each ``[added + 1, tasks]``.
    """
    tasks = x_support.shape[0]
    grid = candidates.view(1, -1, 1).expand(tasks, -1, -1).to(x_support.device)  # [tasks, n, 1]
    target = truth(grid)  # [tasks, n, 1]
    curves = {}
    for rule in ("active", "random"):
        xs, ys, errors = x_support, y_support, []
        for step in range(added + 1):
            samples = predict(xs, ys, grid)  # [S, tasks, n, 1]
            errors.append(((samples.mean(0) - target) ** 2).mean((1, 2)).cpu())
            if step == added:
                break
            if rule == "active":
                pick = samples.var(0)[..., 0].argmax(1)  # [tasks]
            else:
                pick = torch.randint(grid.shape[1], (tasks,), generator=generator).to(grid.device)
            x_new = grid[torch.arange(tasks), pick][:, None]  # [tasks, 1, 1]
            y_new = truth(x_new)
            if noise_std:
                y_new = y_new + noise_std * torch.randn(y_new.shape, generator=generator).to(y_new.device)
            xs, ys = torch.cat([xs, x_new], 1), torch.cat([ys, y_new], 1)
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
    from metaedu.algorithms.platipus import forward_samples, noisy_maml_models

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
