"""Meta-Q-Learning's ingredients (Fakoor, Chaudhari, Soatto & Smola, ICLR 2020).

MQL meta-trains one off-policy actor-critic on all training tasks at once, with a *context* (a
summary of recent transitions) as an extra input, and adapts to a new task by reusing the old
tasks' replay buffer, weighted by how much each old transition looks like the new task's. Read
next to the paper:

1. **Context-conditioned TD3** (sec. 3-4): actor ``mu_phi(s, z)``, twin critics ``Q_1, Q_2(s, a, z)``,
   ``z`` = a GRU's summary of the last transitions ``(s, a, r, s')`` (:class:`ContextActorCritic`).
   The critics regress to the TD3 target (:func:`td3_target`)::

       y = r + gamma (1 - d) min_j Q'_j(s', a~, z'),   a~ = clip(mu'(s', z') + clip(eps, -c, c), -a_max, a_max),
       eps ~ N(0, sigma^2)

   with target networks ' (Polyak averages). The multi-task objective is this loss summed over
   the training tasks' transitions (one buffer, each transition with its own context).
2. **Propensity score** (sec. 4.2): a logistic regression ``P(new | x) = sigmoid(w^T x + b)`` told
   apart the new task's transitions (label 1) from the old buffer's (label 0), on the context
   features ``x``. The importance weight of an old transition is the density ratio::

       beta(x) = p_new(x) / p_old(x) = P(new | x) / P(old | x) * n_old / n_new = exp(w^T x + b) * n_old / n_new

   (:func:`propensity_weights`), clipped above at ``clip`` (the paper clips, too).
3. **Adaptation** (eq. 11-12): on the new task, minimise the TD loss on its own transitions plus the
   beta-weighted TD loss on the old buffer, plus a proximal term ``lambda / 2 ||theta - theta_meta||^2``
   that keeps theta near the meta-trained weights (the paper's KL-like term for a deterministic
   policy); lambda = 1 - ESS, ESS = (sum beta)^2 / (n sum beta^2) the normalised effective sample
   size: the less the old data resemble the new task, the more the weights are held back
   (:func:`adaptation_loss`).

Symbols and names: gamma = ``discount``, sigma = ``target_noise``, c = ``noise_clip``, beta =
``weights``, lambda = ``proximal``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.nn.backbones import MLP


def td3_target(reward: torch.Tensor, done: torch.Tensor, next_q1: torch.Tensor, next_q2: torch.Tensor,
               discount: float) -> torch.Tensor:
    """``r + gamma (1 - d) min(Q'_1, Q'_2)`` for a batch ``[n]`` (no gradient flows into the target)."""
    if not 0 <= discount <= 1:
        raise ValueError(f"discount must be in [0, 1], got {discount}")
    return (reward + discount * (1 - done.float()) * torch.minimum(next_q1, next_q2)).detach()


def smoothed_target_action(mean_action: torch.Tensor, noise: torch.Tensor, noise_clip: float,
                           max_action: float) -> torch.Tensor:
    """TD3's target policy smoothing: ``clip(mu'(s') + clip(noise, -c, c), -a_max, a_max)``."""
    return (mean_action + noise.clamp(-noise_clip, noise_clip)).clamp(-max_action, max_action)


class ContextActorCritic(nn.Module):
    """TD3's actor and twin critics, each reading the context ``z`` of a GRU over recent transitions.

    Shapes: ``history [n, T, 2 obs + act + 1]`` (s, a, r, s' of the last T steps) -> ``z [n, context]``;
    ``actor(s [n, obs], z) -> [n, act]`` in ``[-max_action, max_action]``; ``critics(s, a, z) -> ([n], [n])``.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64), context: int = 16,
                 max_action: float = 1.0) -> None:
        super().__init__()
        self.max_action = max_action
        self.gru = nn.GRU(2 * obs_dim + act_dim + 1, context, batch_first=True)
        self.actor_net = MLP((obs_dim + context, *hidden, act_dim))
        self.q1 = MLP((obs_dim + act_dim + context, *hidden, 1))
        self.q2 = MLP((obs_dim + act_dim + context, *hidden, 1))

    def context(self, history: torch.Tensor) -> torch.Tensor:
        return self.gru(history)[1][0]

    def actor(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.actor_net(torch.cat([obs, z], -1)))

    def critics(self, obs: torch.Tensor, action: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action, z], -1)
        return self.q1(x)[..., 0], self.q2(x)[..., 0]


def fit_logistic_regression(x: torch.Tensor, labels: torch.Tensor, l2: float = 1e-3, iterations: int = 100):
    """Weights ``w [d]`` and bias ``b`` minimising the mean logistic loss + ``l2/2 |w|^2`` (full batch, L-BFGS:
    deterministic, no random state)."""
    if x.dim() != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"x must be [n, d] and labels [n], got {tuple(x.shape)} and {tuple(labels.shape)}")
    if not ((labels == 0) | (labels == 1)).all() or labels.min() == labels.max():
        raise ValueError("labels must be 0 and 1, with both classes present")
    w = torch.zeros(x.shape[1] + 1, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=iterations, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")
    features = torch.cat([x, torch.ones_like(x[:, :1])], 1)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(features @ w, labels.to(x.dtype)) + 0.5 * l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w[:-1].detach(), w[-1].detach()


def propensity_weights(new: torch.Tensor, old: torch.Tensor, query: torch.Tensor | None = None, clip: float = 20.0,
                       l2: float = 1e-3) -> torch.Tensor:
    """beta(x) = p_new(x) / p_old(x) estimated by logistic regression, for ``query [m, d]`` (default: ``old``).

    ``new [n_new, d]`` and ``old [n_old, d]`` are the two data sets' features; the class-prior factor
    ``n_old / n_new`` turns the classifier's odds into the density ratio. Clipped above at ``clip``.
    """
    if new.dim() != 2 or old.dim() != 2 or new.shape[1] != old.shape[1]:
        raise ValueError(f"new and old must be [n, d] with the same d, got {tuple(new.shape)} and {tuple(old.shape)}")
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip}")
    x = torch.cat([new, old])
    labels = torch.cat([torch.ones(len(new)), torch.zeros(len(old))]).to(x.device)
    w, b = fit_logistic_regression(x, labels, l2)
    query = old if query is None else query
    log_ratio = query @ w + b + torch.log(torch.tensor(len(old) / len(new), dtype=query.dtype))
    return log_ratio.exp().clamp(max=clip)


def effective_sample_size(weights: torch.Tensor) -> torch.Tensor:
    """``(sum beta)^2 / (n sum beta^2)``: 1 when all weights are equal, 1/n when one weight holds everything."""
    if weights.dim() != 1 or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("weights must be a [n] tensor of non-negative numbers, not all zero")
    return weights.sum() ** 2 / (len(weights) * (weights**2).sum())


def proximal_term(model: nn.Module, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """``1/2 ||theta - theta_meta||^2`` over every parameter of ``model`` (``anchor``: the meta-trained weights)."""
    return 0.5 * sum(((p - anchor[n]) ** 2).sum() for n, p in model.named_parameters())


def adaptation_loss(new_td: torch.Tensor, old_td: torch.Tensor, weights: torch.Tensor, model: nn.Module,
                    anchor: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """MQL's adaptation objective (eq. 11-12): ``mean(new_td) + mean(beta * old_td) + lambda * proximal``.

    ``new_td [n]`` and ``old_td [m]`` are per-transition TD losses on the new task's and the old buffer's
    transitions, ``weights [m]`` their beta; lambda = 1 - ESS(beta). Returns the loss and lambda.
    """
    if old_td.shape != weights.shape:
        raise ValueError(f"old_td {tuple(old_td.shape)} and weights {tuple(weights.shape)} must match")
    lam = float(1 - effective_sample_size(weights.detach()))
    return new_td.mean() + (weights.detach() * old_td).mean() + lam * proximal_term(model, anchor), lam
