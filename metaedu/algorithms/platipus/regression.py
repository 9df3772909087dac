"""PLATIPUS's regression experiment (Finn, Xu & Levine 2018, section 5.1): sampled functions on ambiguous
lines-or-sines tasks.

* :func:`kinds_of_samples`, :func:`both_kinds`: do the models sampled for one ambiguous task include a
  line *and* a sinusoid (each a good fit of its shape)?
* :func:`active_learning_curves`: ask for the label of the x where the sampled functions disagree most,
  against a random x, and follow the error as the labels reweight the samples.

The tasks and the shape measures are in :mod:`metaedu.tasks.ambiguous_regression`.
"""

from __future__ import annotations

import torch

from metaedu.tasks.ambiguous_regression import LINE, MIN_FIT, SINE, curve_kinds


def kinds_of_samples(curves: torch.Tensor, x: torch.Tensor, min_fit: float = MIN_FIT) -> torch.Tensor:
    """``[samples, tasks]`` :func:`~metaedu.tasks.ambiguous_regression.curve_kinds` of sampled curves
    ``[samples, tasks, n]`` on inputs ``x`` ``[n]``: LINE, SINE or NEITHER."""
    return curve_kinds(x.cpu(), curves.cpu(), min_fit)


def both_kinds(kinds: torch.Tensor) -> torch.Tensor:
    """Per task (``[tasks]`` float, 1 or 0): do the samples include at least one line and one sinusoid?"""
    return ((kinds == LINE).any(0) & (kinds == SINE).any(0)).float()


def active_learning_curves(
    samples: torch.Tensor, truth: torch.Tensor, added: int, noise_std: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
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
        raise ValueError(
            f"samples must be [S, tasks, n] and truth [tasks, n], got {tuple(samples.shape)} and {tuple(truth.shape)}"
        )
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
