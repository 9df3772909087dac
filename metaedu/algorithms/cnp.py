"""Conditional Neural Processes (Garnelo et al., ICML 2018), the contextual meta-learner of Yin et al. 2020.

A CNP does not adapt weights. It reads the task's support set (the "context")
into one vector and predicts each query point from that vector and the query input:

1. Encode every support pair: ``r_j = h([z_j, y_j])``, with ``z_j`` the (encoded) input.
2. Aggregate by the mean, so the order of the support set does not matter:
   ``r = (1/K) sum_j r_j``.
3. Decode each query input with ``r``: ``(mu*, log sigma*^2) = g([z*, r])``, a Gaussian
   ``q(y* | x*, D) = N(mu*, sigma*^2)``.
4. Train by maximising the query log-likelihood over many tasks,
   ``max E_T [ (1/K*) sum log N(y*; mu*, sigma*^2) ]``.

Symbols and names: h = ``context_net``, g = ``decoder``, r = ``represent(...)``,
K = ``k_shot``; inputs reach the CNP already encoded as feature vectors ``z``
(an identity for low-dimensional inputs, an image encoder otherwise; see
:mod:`metaedu.algorithms.memorization`, where the encoder carries the meta-regulariser).
In Yin et al.'s notation, the context path (h, the mean, and g's use of r) is how
D reaches the prediction, and ``z* -> g`` is the direct path from x* to y*.

The standard deviation is kept above ``min_std`` (``sigma = min_std + (1 - min_std)
softplus(.)``), as Le et al. (2018) do, so the likelihood cannot grow without bound
on a noiseless task. With ``learn_std=False`` it is fixed at 1, and the negative
log-likelihood is half the squared error plus a constant: the loss Yin et al. train
their pose CNPs with. An empty support set (``K = 0``) gives ``r = 0``: the CNP's
prediction with no data, used to test whether a model ignores its support set.
All tasks of a batch go through the networks together: shapes are
``[tasks, points, features]`` throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.nn import gaussian
from metaedu.nn.backbones import MLP

#: Lower bound of the predicted standard deviation (Le et al. 2018 use 0.1 as well).
MIN_STD = 0.1


class CNP(nn.Module):
    """h (context pairs -> r_j), mean aggregation, g ([z*, r] -> Gaussian over y*).

    Args:
        x_dim: size of the (encoded) inputs z.
        y_dim: size of the targets.
        r_dim: size of the task representation r.
        hidden: hidden layer sizes of h and of g.
        min_std: lower bound of the predicted standard deviation.
        learn_std: predict the standard deviation (True) or fix it at 1 (False: a squared-error loss).
    Example::

        cnp = CNP(x_dim=1, y_dim=1)
        mu, log_var = cnp(x_support, y_support, x_query)   # [tasks, n_query, 1] each
        nll = cnp.nll(x_support, y_support, x_query, y_query)   # [tasks]
    """

    def __init__(self, x_dim: int, y_dim: int = 1, r_dim: int = 64, hidden: tuple[int, ...] = (64, 64),
                 min_std: float = MIN_STD, learn_std: bool = True) -> None:
        super().__init__()
        for name, value in (("x_dim", x_dim), ("y_dim", y_dim), ("r_dim", r_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < min_std < 1:
            raise ValueError(f"min_std must lie in (0, 1), got {min_std!r}")
        self.x_dim, self.y_dim, self.r_dim, self.min_std = int(x_dim), int(y_dim), int(r_dim), float(min_std)
        self.learn_std = bool(learn_std)
        self.context_net = MLP((x_dim + y_dim, *hidden, r_dim))  # h
        self.decoder = MLP((x_dim + r_dim, *hidden, (2 if learn_std else 1) * y_dim))  # g

    def represent(self, z_support: torch.Tensor, y_support: torch.Tensor) -> torch.Tensor:
        """Steps 1-2: ``r = mean_j h([z_j, y_j])``, ``[tasks, r_dim]`` (zeros for an empty support set)."""
        self._check(z_support, y_support)
        if z_support.shape[1] == 0:
            return z_support.new_zeros(z_support.shape[0], self.r_dim)
        r_j = self.context_net(torch.cat([z_support, y_support], -1))  # [tasks, K, r_dim]
        return r_j.mean(1)

    def decode(self, z_query: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 3: the Gaussian over each query target, ``mu`` and ``log_var`` ``[tasks, n, y_dim]``."""
        if z_query.dim() != 3 or z_query.shape[-1] != self.x_dim:
            raise ValueError(f"query inputs must be [tasks, n, {self.x_dim}], got {tuple(z_query.shape)}")
        if r.shape != (z_query.shape[0], self.r_dim):
            raise ValueError(f"r must be [tasks, {self.r_dim}] for {z_query.shape[0]} tasks, got {tuple(r.shape)}")
        r_expanded = r[:, None, :].expand(-1, z_query.shape[1], -1)  # [tasks, n, r_dim]
        out = self.decoder(torch.cat([z_query, r_expanded], -1))
        if not self.learn_std:
            return out, torch.zeros_like(out)  # sigma = 1
        mu, raw = out.split(self.y_dim, -1)
        std = self.min_std + (1 - self.min_std) * F.softplus(raw)
        return mu, 2 * torch.log(std)

    def forward(self, z_support, y_support, z_query) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(z_query, self.represent(z_support, y_support))

    def nll(self, z_support, y_support, z_query, y_query) -> torch.Tensor:
        """Step 4's loss for each task: mean negative log-likelihood of its query targets, ``[tasks]``."""
        mu, log_var = self(z_support, y_support, z_query)
        return -gaussian.log_density(y_query, mu, log_var, event_dims=1).mean(1)

    def predict(self, z_support, y_support, z_query) -> torch.Tensor:
        """The predictive mean for each query point, ``[tasks, n, y_dim]``."""
        return self(z_support, y_support, z_query)[0]

    def _check(self, z: torch.Tensor, y: torch.Tensor) -> None:
        if z.dim() != 3 or y.dim() != 3 or z.shape[:2] != y.shape[:2]:
            raise ValueError(f"support inputs and targets must be [tasks, K, dim] with the same tasks and K, "
                             f"got {tuple(z.shape)} and {tuple(y.shape)}")
        if z.shape[-1] != self.x_dim or y.shape[-1] != self.y_dim:
            raise ValueError(f"expected inputs of size {self.x_dim} and targets of size {self.y_dim}, "
                             f"got {z.shape[-1]} and {y.shape[-1]}")
