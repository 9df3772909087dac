"""The two baselines of Ravi & Larochelle's table: fine-tune and nearest neighbour.

Both start from the same network, pre-trained as an ordinary classifier over all
meta-training classes at once (no episodes):

* **Baseline-finetune**: take the pre-trained conv blocks, put a fresh (zero) 5-way
  head on top, and train the whole network on D_train with plain gradient descent for
  a fixed number of steps -- exactly the meta-learner's update with f_t = 1 and
  i_t = ``finetune_lr``, started from the pre-trained theta instead of a learned c_0.
* **Baseline-nearest-neighbour**: embed D_train and D_test with the pre-trained conv
  blocks and give each D_test image the label of its nearest D_train image (cosine).

The network is the meta-learner's own learner (:class:`~metaedu.algorithms.meta_lstm.ConvLearner`),
so the comparison is between learning rules, not architectures. Its batch norm follows
the same rule as the learner's: statistics of D_train, applied to D_test as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaedu.algorithms.meta_lstm import ConvLearner, query_logits
from metaedu.data.base import ClassImageSet, to_float
from metaedu.tasks.episodes import Episodes


@dataclass
class Settings:
    """Pre-training and fine-tuning hyper-parameters of the baselines."""

    pretrain_steps: int = 300  # Adam steps of whole-set classification
    batch_size: int = 64  # images per pre-training step
    pretrain_lr: float = 3e-3  # Adam learning rate for pre-training
    finetune_steps: int = 30  # gradient steps on D_train per test episode (see the note below)
    finetune_lr: float = 0.3  # their step size
    # finetune_steps and finetune_lr: the best of lr in {0.03, 0.1, 0.3} x steps in {10, 30}, measured
    # on 5-way glyph test episodes with an 8-filter learner -- a choice that favours the baseline.

    @classmethod
    def quick(cls) -> "Settings":
        return cls()

    @classmethod
    def full(cls) -> "Settings":
        return cls(pretrain_steps=20000, batch_size=128, pretrain_lr=1e-3)


def pretrain(
    learner: ConvLearner, data: ClassImageSet, settings: Settings, device="cpu", seed: int = 0, progress: bool = True
) -> tuple[torch.Tensor, "object"]:
    """Train the learner's conv blocks (with an ``n_classes``-way head) to classify every image of ``data``.

    Returns the pre-trained theta for ``learner`` (its conv blocks, a zero ``n_way`` head), ``[P]``,
    and the training History.
    """
    from metaedu.training import train

    whole = ConvLearner(data.n_classes, learner.filters, learner.blocks, learner.in_channels, learner.image_size)
    gen = torch.Generator().manual_seed(seed)
    theta = whole.init(gen).to(device).requires_grad_(True)  # [P_whole]
    opt = torch.optim.Adam([theta], lr=settings.pretrain_lr)
    images, targets = data.images.to(device), data.targets.to(device)

    def step(_i: int) -> dict:
        idx = torch.randint(len(targets), (settings.batch_size,), generator=gen).to(device)
        x = to_float(images[idx])[None]  # [1, batch, C, H, W]
        logits = whole.logits(theta[None], x)[0]  # [batch, n_classes]
        loss = F.cross_entropy(logits, targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "acc": (logits.argmax(-1) == targets[idx]).float().mean() * 100}

    history = train(step, settings.pretrain_steps, progress=progress, desc="pre-training")
    body = theta.detach()[: whole.offsets["head.weight"].start]  # conv and batch-norm parameters
    head = torch.zeros(learner.n_params - body.numel(), device=device)
    return torch.cat([body, head]), history


def sgd(learner: ConvLearner, theta0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """``steps`` of plain gradient descent on each task's D_train: theta <- theta - lr * grad L.

    Args:
        theta0: ``[P]`` (the same start for every task) or ``[tasks, P]``.
        x: ``[tasks, n, C, H, W]``; y: ``[tasks, n]``.
    Returns: ``[tasks, P]``.
    """
    theta = theta0.expand(x.shape[0], -1) if theta0.dim() == 1 else theta0
    for _ in range(steps):
        current = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(learner.task_losses(current, x, y).sum(), current)
        theta = current.detach() - lr * grad
    return theta


def finetune_predictor(learner: ConvLearner, theta_pre: torch.Tensor, settings: Settings):
    """``predict(episodes) -> logits`` of Baseline-finetune, for ``episode_accuracy``."""

    def predict(episodes: Episodes) -> torch.Tensor:
        theta = sgd(learner, theta_pre, episodes.x_support, episodes.y_support, settings.finetune_lr, settings.finetune_steps)
        return query_logits(learner, theta, episodes)

    return predict


def nearest_neighbour_predictor(learner: ConvLearner, theta_pre: torch.Tensor):
    """``predict(episodes) -> labels`` of Baseline-nearest-neighbour (cosine similarity of embeddings)."""

    def predict(episodes: Episodes) -> torch.Tensor:
        n_s = episodes.x_support.shape[1]
        x = torch.cat([episodes.x_support, episodes.x_query], dim=1)
        theta = theta_pre.expand(episodes.tasks, -1)
        z = F.normalize(learner.features(theta, x, n_stats=n_s), dim=-1)  # [tasks, n_s + n_q, D]
        sim = z[:, n_s:] @ z[:, :n_s].transpose(1, 2)  # [tasks, n_q, n_s]
        return torch.gather(episodes.y_support, 1, sim.argmax(-1))  # [tasks, n_q]

    return predict
