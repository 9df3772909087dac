"""Scoring the MANN lecture's models: the sequence loss, predictions, and accuracy per instance.

Accuracy is reported per *instance*: the 1st, 2nd, ... time a class is seen in an episode
(:data:`INSTANCES`, the paper's). The nearest neighbour among the images whose labels have already
been shown is the non-learning baseline (:func:`nearest_neighbour_predict`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.evaluation import Score, mean_ci
from metaedu.nn.distances import nearest_neighbour
from metaedu.runtime import evaluation_mode
from metaedu.tasks.sequences import Sequences, SequenceSampler

INSTANCES = (1, 2, 3, 4, 5, 10)


def sequence_loss(logits: torch.Tensor, seq: Sequences) -> torch.Tensor:
    """Cross-entropy of every label character at every step, summed over characters, averaged over steps."""
    B, T, L = seq.targets.shape
    per_char = logits.view(B, T, L, seq.label_size)
    return F.cross_entropy(per_char.flatten(0, 2), seq.targets.flatten(), reduction="sum") / (B * T)


def predict_characters(logits: torch.Tensor, seq: Sequences) -> torch.Tensor:
    """The most likely character of each label position: ``[B, T, L * S]`` -> ``[B, T, L]``."""
    B, T, L = seq.targets.shape
    return logits.view(B, T, L, seq.label_size).argmax(-1)


def correct_steps(predicted: torch.Tensor, seq: Sequences) -> torch.Tensor:
    """A step counts as correct when every character of its label is right: ``[B, T]`` bool."""
    return (predicted == seq.targets).all(-1)


def nearest_earlier_labels(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """At each step t >= 1, the label of the closest earlier input x_s, s < t (Euclidean): ``[B, T, L]``.

    ``x`` ``[B, T, D]``, ``targets`` ``[B, T, L]``. Step 0 has no earlier input and is left at zero.
    """
    T = targets.shape[1]
    earlier = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-1)  # s < t
    predicted = nearest_neighbour(x, targets, x, "euclidean", allowed=earlier)  # [B, T, L]
    predicted[:, 0] = 0
    return predicted


def nearest_neighbour_predict(seq: Sequences, generator: torch.Generator | None = None) -> torch.Tensor:
    """Label of the closest earlier image (Euclidean, on pixels) whose label has been shown.

    At step t the labels y_1 .. y_{t-1} are known, so the candidates are x_1 .. x_{t-1}
    (:func:`nearest_earlier_labels`). At step 1 nothing is known and the guess is a uniformly
    random label. Returns ``[B, T, L]``.
    """
    B, T, L = seq.targets.shape
    predicted = nearest_earlier_labels(seq.x, seq.targets)
    guess = torch.randint(seq.label_size, (B, L), generator=generator).to(seq.targets.device)
    predicted[:, 0] = guess
    return predicted


def instance_accuracy(correct: torch.Tensor, instance: torch.Tensor, instances=INSTANCES) -> dict[int, torch.Tensor]:
    """Per-episode accuracy (%) at each instance number: ``{k: [B]}``.

    ``correct`` and ``instance`` are ``[B, T]``; an episode's accuracy at instance k is the
    share of the steps showing a class for the k-th time that were answered correctly.
    """
    out = {}
    for k in instances:
        at_k = (instance == k).float()  # [B, T]
        count = at_k.sum(1)
        if (count == 0).any():
            raise ValueError(f"instance {k} does not occur in every episode (are there {k} images per class?)")
        out[k] = (correct.float() * at_k).sum(1) / count * 100
    return out


def _draws(sampler: SequenceSampler, n_episodes: int, batch: int):
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be at least 1, got {n_episodes}")
    remaining = n_episodes
    while remaining > 0:
        seq = sampler.sample(min(batch, remaining))
        remaining -= seq.episodes
        yield seq


@torch.no_grad()
def instance_accuracies(predict, episodes, n_episodes: int | None = None, batch: int = 50,
                        instances=INSTANCES) -> dict[int, torch.Tensor]:
    """Each test episode's accuracy (%) at each instance: ``{k: [n_episodes]}`` on the CPU.

    ``predict(seq)`` returns the predicted characters ``[B, T, L]`` (see :func:`predictor`).
    ``episodes`` is a :class:`SequenceSampler` (``n_episodes`` are drawn from it) or batches of
    :class:`Sequences` drawn once and given to every method: the same episodes, so per-episode
    differences give a paired comparison (``metaedu.verdicts.paired``); samplers made with the
    same seed also draw the same episodes.
    """
    if isinstance(episodes, SequenceSampler):
        if n_episodes is None:
            raise ValueError("n_episodes is needed to draw from a sampler")
        if max(instances) > episodes.per_class:
            raise ValueError(f"instance {max(instances)} needs per_class >= {max(instances)}, got {episodes.per_class}")
        episodes = _draws(episodes, n_episodes, batch)
    per_episode: dict[int, list[torch.Tensor]] = {k: [] for k in instances}
    for seq in episodes:
        acc = instance_accuracy(correct_steps(predict(seq), seq), seq.instance, instances)
        for k in instances:
            per_episode[k].append(acc[k].cpu())
    if not per_episode[instances[0]]:
        raise ValueError("no test episodes were given")
    return {k: torch.cat(v) for k, v in per_episode.items()}


def evaluate(predict, sampler: SequenceSampler, n_episodes: int, batch: int = 50,
             instances=INSTANCES) -> dict[int, Score]:
    """Accuracy with its 95% interval at each instance, over ``n_episodes`` test episodes."""
    return {k: mean_ci(v) for k, v in instance_accuracies(predict, sampler, n_episodes, batch, instances).items()}


def predictor(model: nn.Module):
    """``seq -> predicted characters`` for a trained network (evaluation mode, no gradients)."""

    def predict(seq: Sequences) -> torch.Tensor:
        with torch.no_grad(), evaluation_mode(model):
            return predict_characters(model(seq.inputs), seq)

    return predict
