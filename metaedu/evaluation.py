"""Scores over many test episodes, with 95% confidence intervals, beside the papers' figures.

Nothing here knows a method: a method hands over a ``predict(episodes)`` function
(or, for the metric-learning models, a model with an ``encoder`` and ``logits``), and
gets back a :class:`Score`, a mean with its 95% interval. Also here: the ROC curve
of a verification score; scores of a predictive distribution for regression tasks, given as
samples of the prediction plus Gaussian noise (held-out log-likelihood, the probability integral
transform and the coverage of central bands); and Markdown tables of our scores beside the papers'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from metaedu.data.base import ClassImageSet
from metaedu.data.embedded import EmbeddedSet
from metaedu.nn import gaussian
from metaedu.nn.distances import encode
from metaedu.runtime import evaluation_mode
from metaedu.tasks.episodes import EpisodeSampler, Episodes

#: Normal quantile for a two-sided 95% interval.
Z95 = 1.959964


@dataclass
class Score:
    """A mean over test episodes with the half-width of its 95% confidence interval."""

    mean: float
    ci95: float
    n: int
    unit: str = "%"

    def __str__(self) -> str:
        digits = 1 if self.unit == "%" else 3
        return f"{self.mean:.{digits}f} ± {self.ci95:.{digits}f}"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95": self.ci95, "n": self.n, "unit": self.unit}


def mean_ci(values: Iterable[float] | torch.Tensor, unit: str = "%") -> Score:
    """Mean and 95% interval half-width 1.96 * s / sqrt(n) (normal approximation over episodes)."""
    v = torch.as_tensor(values if isinstance(values, torch.Tensor) else list(values), dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("no values to average")
    if not torch.isfinite(v).all():
        raise FloatingPointError(f"{int((~torch.isfinite(v)).sum())} of {v.numel()} values are NaN or infinite")
    n = v.numel()
    std = float(v.std(unbiased=True)) if n > 1 else 0.0
    return Score(float(v.mean()), Z95 * std / math.sqrt(n), n, unit)


def bootstrap_mean_interval(values: torch.Tensor, n_resamples: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """95% percentile-bootstrap interval of the mean of each row of ``values`` ``[rows, n]``: ``(low, high)``, ``[rows]`` each.

    Unlike the normal approximation of :func:`mean_ci` it stays inside the range of the data,
    so the interval of a mean of positive numbers (an MSE) is positive too; for plots of skewed
    per-task errors. The same resampled tasks are used for every row (rows = steps of one method).
    """
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.dim() == 1:
        v = v[None]
    if v.dim() != 2 or v.shape[1] < 2:
        raise ValueError(f"need values of shape [rows, n] with n >= 2, got {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise FloatingPointError("values contain NaN or infinite entries")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(v.shape[1], (n_resamples, v.shape[1]), generator=g)  # [resamples, n]
    means = v[:, pick].mean(-1)  # [rows, resamples]
    return means.quantile(0.025, dim=1), means.quantile(0.975, dim=1)


@torch.no_grad()
def episode_accuracies(
    predict: Callable[[Episodes], torch.Tensor],
    sampler: EpisodeSampler,
    n_episodes: int = 600,
    batch: int = 50,
) -> torch.Tensor:
    """Query accuracy (%) of ``predict`` on each of ``n_episodes`` test episodes: ``[n_episodes]``.

    ``predict(episodes)`` returns logits ``[tasks, n_query_total, n_way]`` or labels
    ``[tasks, n_query_total]`` for the query sets. Two methods given samplers with
    the same seed see the same episodes, so ``mean_ci(acc_a - acc_b)`` is their
    paired difference (a sharper comparison than two separate intervals).
    """
    if getattr(sampler, "n_query", 1) < 1:
        raise ValueError(f"the test episodes have no queries to score (n_query={sampler.n_query}); "
                         "give the sampler n_query >= 1")
    if n_episodes < 1 or batch < 1:
        raise ValueError(f"n_episodes and batch must be at least 1, got {n_episodes} and {batch}")
    per_episode = []
    remaining = n_episodes
    while remaining > 0:
        eps = sampler.sample(min(batch, remaining))
        out = predict(eps)
        labels = out.argmax(-1) if out.dim() == 3 else out
        per_episode.append((labels == eps.y_query).float().mean(1).cpu() * 100)
        remaining -= eps.tasks
    return torch.cat(per_episode)


def episode_accuracy(
    predict: Callable[[Episodes], torch.Tensor],
    sampler: EpisodeSampler,
    n_episodes: int = 600,
    batch: int = 50,
) -> Score:
    """Accuracy (%) of ``predict`` over ``n_episodes`` test episodes, with its 95% interval.

    Each episode contributes its query accuracy as one sample of the interval
    (:func:`episode_accuracies`).
    """
    return mean_ci(episode_accuracies(predict, sampler, n_episodes, batch))


@torch.no_grad()
def regression_mse(predict: Callable, sampler, n_tasks: int = 600, batch: int = 100) -> Score:
    """Mean squared error on the query points of ``n_tasks`` regression tasks, with its interval."""
    per_task = []
    remaining = n_tasks
    while remaining > 0:
        tasks = sampler.sample(min(batch, remaining))
        pred = predict(tasks)
        per_task.append(((pred - tasks.y_query) ** 2).flatten(1).mean(1).cpu())
        remaining -= tasks.tasks
    return mean_ci(torch.cat(per_task), unit="mse")


def features_of(encoder, x: torch.Tensor, source: ClassImageSet | None = None) -> torch.Tensor:
    """Embeddings ``[tasks, n, D]`` of an episode's images, or of episodes drawn from an :class:`EmbeddedSet`.

    ``source`` is the set the episodes came from; when it is an :class:`EmbeddedSet`
    the "images" ``[tasks, n, D, 1, 1]`` already are the embeddings.
    """
    if isinstance(source, EmbeddedSet):
        if source.encoder is not encoder:
            raise ValueError(f"{source.name} was embedded by a different encoder than this model's")
        return x.flatten(2)
    return encode(encoder, x)


def evaluate_metric_model(
    model: torch.nn.Module,
    data: ClassImageSet,
    n_way: int,
    k_shot: int,
    n_query: int = 5,
    n_episodes: int = 600,
    device: str | torch.device = "cpu",
    seed: int = 0,
    batch: int = 50,
) -> Score:
    """Accuracy (%) with its 95% interval of a metric model over fresh test episodes of ``data``.

    ``model`` has an ``encoder`` and ``logits(z_support, y_support, z_query, n_way)``
    (every model of the metric-learning lecture does). ``data`` is an image set or,
    much faster for many episodes, the :class:`EmbeddedSet` that
    :func:`~metaedu.data.embedded.embed_set` made from it with ``model.encoder``.
    The model is scored in evaluation mode.
    """
    return mean_ci(metric_model_accuracies(model, data, n_way, k_shot, n_query, n_episodes, device, seed, batch))


def metric_model_accuracies(
    model: torch.nn.Module,
    data: ClassImageSet,
    n_way: int,
    k_shot: int,
    n_query: int = 5,
    n_episodes: int = 600,
    device: str | torch.device = "cpu",
    seed: int = 0,
    batch: int = 50,
) -> torch.Tensor:
    """The per-episode accuracies (%) behind :func:`evaluate_metric_model`, ``[n_episodes]``: two models
    scored with the same ``seed`` and sizes see the same episodes (for a paired comparison)."""
    sampler = EpisodeSampler(data, n_way, k_shot, n_query, device=device, seed=seed)

    def predict(eps: Episodes) -> torch.Tensor:
        z_support = features_of(model.encoder, eps.x_support, data)  # [tasks, n_way * k_shot, D]
        z_query = features_of(model.encoder, eps.x_query, data)  # [tasks, n_way * n_query, D]
        return model.logits(z_support, eps.y_support, z_query, n_way)  # [tasks, n_way * n_query, n_way]

    with evaluation_mode(model):
        return episode_accuracies(predict, sampler, n_episodes=n_episodes, batch=batch)


def roc_curve(p, y) -> tuple[np.ndarray, np.ndarray, float]:
    """False and true positive rates of the scores ``p`` against labels ``y`` (1 = positive), and the AUC.

    scikit-learn's curve: tied scores form one step (a diagonal segment), so the area is
    P(positive outscores negative) + 1/2 P(tie), whatever order the ties came in.
    """
    from sklearn.metrics import auc, roc_curve as sk_roc_curve

    p = torch.as_tensor(p).detach().float().flatten().cpu().numpy()
    y = torch.as_tensor(y).detach().flatten().cpu().numpy()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} scores but {y.size} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    if y.min() == y.max():
        raise ValueError("an ROC curve needs both positive and negative examples")
    fpr, tpr, _ = sk_roc_curve(y, p)
    return fpr, tpr, float(auc(fpr, tpr))


# ----------------------------------------------------------------------------- predictive distributions (regression)


def predictive_log_likelihood(samples: torch.Tensor, y: torch.Tensor, noise_std: float) -> torch.Tensor:
    """Mean log density per held-out point of the mixture ``1/S sum_s N(y; f_s, sigma^2)``, per task.

    ``samples`` ``[S, tasks, n, 1]`` (S = 1: a point prediction), ``y`` ``[tasks, n, 1]`` -> ``[tasks]``.
    """
    if samples.dim() != 4 or samples.shape[1:] != y.shape:
        raise ValueError(
            f"samples must be [S, *y.shape] = [S, {', '.join(map(str, y.shape))}], got {tuple(samples.shape)}"
        )
    if not noise_std > 0:
        raise ValueError(f"noise_std must be positive, got {noise_std!r}")
    log_p = gaussian.log_density(y.unsqueeze(0), samples, 2 * math.log(noise_std), event_dims=1)  # [S, tasks, n]
    mixture = torch.logsumexp(log_p, dim=0) - math.log(samples.shape[0])  # [tasks, n]
    return mixture.mean(-1)


def pit(samples: torch.Tensor, y: torch.Tensor, noise_std: float) -> torch.Tensor:
    """Probability integral transform: the predictive CDF at each held-out point, ``[tasks, n]``.

    For the mixture ``1/S sum_s N(f_s, sigma^2)``: ``u = 1/S sum_s Phi((y - f_s) / sigma)``. A point lies
    in the central band of level ``l`` exactly when ``|u - 1/2| <= l / 2`` (:func:`coverage`).
    """
    if samples.dim() != 4 or samples.shape[1:] != y.shape:
        raise ValueError(f"samples must be [S, *y.shape], got {tuple(samples.shape)} for y {tuple(y.shape)}")
    z = (y.unsqueeze(0) - samples) / noise_std  # [S, tasks, n, 1]
    return (0.5 * torch.erfc(-z / math.sqrt(2))).mean(0).squeeze(-1)


def coverage(u: torch.Tensor, level: float) -> torch.Tensor:
    """Share (%) of each task's held-out points inside the central ``level`` band, from :func:`pit`: ``[tasks]``."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return ((u - 0.5).abs() <= level / 2).float().mean(-1) * 100


def band(
    samples: torch.Tensor,
    noise_std: float,
    level: float = 0.9,
    draws: int = 20,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper edges of the central ``level`` predictive band, by sampling (for plots).

    Each of the S function draws gets ``draws`` noise draws; returns two ``samples.shape[1:]`` tensors.
    """
    noise = torch.randn(draws, *samples.shape, generator=generator, dtype=samples.dtype).to(samples.device)
    y = (samples.unsqueeze(0) + noise_std * noise).flatten(0, 1)  # [draws * S, ...]
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=y.dtype, device=y.device)
    low, high = torch.quantile(y, q, dim=0)
    return low, high


def choose_noise_std(log_likelihood, grid: list[float]) -> tuple[float, list[float]]:
    """The sigma of ``grid`` with the highest mean held-out log-likelihood ``log_likelihood(sigma)`` ``[tasks]``.

    Meant for meta-validation tasks. Returns the choice and every sigma's mean score.
    """
    if not grid:
        raise ValueError("the grid of noise levels is empty")
    scores = [float(log_likelihood(s).mean()) for s in grid]
    return grid[max(range(len(grid)), key=scores.__getitem__)], scores


def comparison_table(rows: list[dict], title: str | None = None) -> str:
    """A Markdown table of our scores beside the paper's.

    Each row is a dict with ``method``, ``setting`` (e.g. "5-way 1-shot"), ``ours``
    (a :class:`Score` or text), ``paper`` (text, "—" where the paper has none) and an
    optional ``note`` (e.g. the data set, when ours differs from the paper's).
    """
    head = "| method | setting | ours (95% CI) | paper | note |\n|---|---|---|---|---|"
    body = [
        f"| {r['method']} | {r.get('setting', '')} | {r['ours']} | {r.get('paper', '—')} | {r.get('note', '')} |"
        for r in rows
    ]
    return "\n".join(([f"**{title}**", ""] if title else []) + [head] + body)


def comparison_grid(rows: list[dict], title: str | None = None) -> str:
    """The rows of :func:`comparison_table` pivoted: one line per method, the settings side by side.

    For each setting a column of our scores (95% interval) and, when the paper gives any
    figure for that setting, a column of the paper's; one note per method at the end (its
    rows' distinct notes joined). Methods and settings keep the order of their first row.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    settings = list(dict.fromkeys(r.get("setting", "") for r in rows))
    cell = {(r["method"], r.get("setting", "")): r for r in rows}
    if len(cell) != len(rows):
        raise ValueError("two rows share a method and a setting; a grid needs one row per pair")
    with_paper = [s for s in settings if any(str(cell[m, s].get("paper", "—")) != "—" for m in methods if (m, s) in cell)]
    head = ["method"]
    for s in settings:
        head.append(f"{s}: ours (95% CI)")
        if s in with_paper:
            head.append("paper")
    head.append("note")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        out = [m]
        for s in settings:
            r = cell.get((m, s), {})
            out.append(str(r.get("ours", "—")))
            if s in with_paper:
                out.append(str(r.get("paper", "—")))
        notes = dict.fromkeys(str(cell[m, s].get("note", "")) for s in settings if (m, s) in cell)
        out.append("; ".join(n for n in notes if n))
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(([f"**{title}**", ""] if title else []) + lines)


def show_grid(rows: list[dict], title: str | None = None):
    """Display :func:`comparison_grid` as Markdown in a notebook (plain text elsewhere)."""
    text = comparison_grid(rows, title)
    try:
        from IPython.display import Markdown, display

        display(Markdown(text))
    except ImportError:  # pragma: no cover - IPython is a dependency, but scripts may lack a display
        print(text)
    return text


def show_table(rows: list[dict], title: str | None = None):
    """Display :func:`comparison_table` as Markdown in a notebook (plain text elsewhere)."""
    text = comparison_table(rows, title)
    try:
        from IPython.display import Markdown, display

        display(Markdown(text))
    except ImportError:  # pragma: no cover - IPython is a dependency, but scripts may lack a display
        print(text)
    return text


def pivot_table(cells: dict[tuple[str, str], str], row_label: str = "method", title: str | None = None) -> str:
    """A Markdown table with one row per method and one column per setting.

    ``cells[(row, column)]`` is the text of a cell (a score with its interval); rows and columns
    keep the order in which they first appear, a missing cell shows "—".
    """
    if not cells:
        raise ValueError("pivot_table needs at least one cell")
    rows = list(dict.fromkeys(r for r, _ in cells))
    columns = list(dict.fromkeys(c for _, c in cells))
    head = f"| {row_label} | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns)
    body = [f"| {r} | " + " | ".join(str(cells.get((r, c), "—")) for c in columns) + " |" for r in rows]
    return "\n".join(([f"**{title}**", ""] if title else []) + [head] + body)


def show_pivot(cells: dict[tuple[str, str], str], row_label: str = "method", title: str | None = None) -> str:
    """Display :func:`pivot_table` as Markdown in a notebook (plain text elsewhere)."""
    text = pivot_table(cells, row_label, title)
    try:
        from IPython.display import Markdown, display

        display(Markdown(text))
    except ImportError:  # pragma: no cover
        print(text)
    return text
