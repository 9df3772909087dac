"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016).

The paper, in order:

1. A support set S = {(x_i, y_i)}_{i=1..k} defines a classifier c_S; a query x_hat gets
   y_hat = sum_i a(x_hat, x_i) y_i, with y_i one-hot           (:func:`attend`).
2. The attention is a softmax over the support set of cosine similarities c between
   embeddings, a(x_hat, x_i) = exp(c(f(x_hat), g(x_i))) / sum_j exp(c(f(x_hat), g(x_j)))
                                                               (:func:`attention`).
3. Full context embeddings (FCE) make both embeddings depend on the whole set:
   g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i), a bidirectional LSTM over the embedded
   support set plus a skip connection                          (:class:`SupportContext`);
   f(x_hat, S) = attLSTM(f'(x_hat), g(S), K), K steps of
       h_hat_k, c_k = LSTM(f'(x_hat), [h_{k-1}, r_{k-1}], c_{k-1})
       h_k = h_hat_k + f'(x_hat)
       r_{k-1} = sum_i a(h_{k-1}, g(x_i)) g(x_i),  a(h, g(x_i)) = softmax_i(h^T g(x_i))
   and f(x_hat, S) = h_K                                       (:class:`QueryContext`).
   We start from h_0 = f'(x_hat) and c_0 = 0.
4. Training matches testing: episodes drawn like test episodes, maximising
   sum_{(x, y) in B} log P(y | x, S)                           (:func:`episode_loss`).

f' = g' is one :class:`~metaedu.nn.backbones.Conv4` (shared, as in the paper's Omniglot
model). Symbols -> names: f', g' = ``MatchingNet.encoder``, K = ``settings.read_steps``,
FCE on/off = ``settings.fce``. The paper's cosine has no temperature; ``cosine_scale``
(1 in ``full()``) multiplies it, because a cosine in [-1, 1] makes a soft attention that
short training cannot sharpen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from metaedu.algorithms.metric import MetricModel, evaluate, predict, train_on_episodes  # noqa: F401 (the API)
from metaedu.checkpoints import resolve
from metaedu.data.base import ClassImageSet
from metaedu.nn.backbones import Conv4
from metaedu.nn.distances import cosine_similarity, one_hot_labels
from metaedu.runtime import check_settings, seeded
from metaedu.tasks.episodes import check_rotations
from metaedu.training import History


@dataclass
class MatchingSettings:
    """Hyper-parameters of a Matching Network."""

    fce: bool = True  # full context embeddings (BiLSTM over S for g, attLSTM for f) on or off
    read_steps: int = 5  # K: unrolling steps of the attLSTM
    cosine_scale: float = 1.0  # multiplies the cosine inside the attention softmax (paper: 1)
    hidden: int = 64  # Conv4 filters per block = embedding size
    train_way: int = 5  # classes per training episode (train and test conditions match)
    train_shot: int = 1  # support examples per class in training episodes
    train_query: int = 5  # query examples per class in training episodes (the batch B)
    tasks: int = 32  # training episodes per meta-batch
    steps: int = 20000  # meta-batches of training
    lr: float = 1e-3  # Adam learning rate
    rotations: tuple[int, ...] = (0, 90, 180, 270)  # rotated characters as new training classes
    eval_episodes: int = 1000  # test episodes per reported accuracy
    eval_query: int = 5  # query examples per class in test episodes
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "MatchingSettings":
        """A laptop CPU: narrow Conv4, a short run on wider episodes than tested."""
        return cls(hidden=32, read_steps=3, cosine_scale=10.0, train_way=20, train_query=4, tasks=1,
                   steps=60, lr=3e-3, rotations=(0,), eval_episodes=300)

    @classmethod
    def full(cls) -> "MatchingSettings":
        """The paper's Omniglot setting on a GPU (train with the test episode's ways and shots)."""
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("read_steps", "cosine_scale", "hidden", "train_way", "train_shot", "train_query",
                                       "tasks", "steps", "lr", "eval_episodes", "eval_query"))
        check_rotations(self.rotations)


# ----------------------------------------------------------------------------- the method


def attention(z_query: torch.Tensor, z_support: torch.Tensor, cosine_scale: float = 1.0) -> torch.Tensor:
    """a(x_hat, x_i): softmax over the support set of scaled cosines, ``[tasks, n_query, n_support]``."""
    return torch.softmax(cosine_scale * cosine_similarity(z_query, z_support), dim=-1)


def attend(attn: torch.Tensor, y_support: torch.Tensor, n_way: int) -> torch.Tensor:
    """y_hat = sum_i a(x_hat, x_i) y_i: class probabilities ``[tasks, n_query, n_way]``."""
    return attn @ one_hot_labels(y_support, n_way)  # [tasks, n_query, n_support] @ [tasks, n_support, n_way]


def episode_loss(log_probs: torch.Tensor, y_query: torch.Tensor) -> torch.Tensor:
    """-mean over the batch B of log P(y | x, S)."""
    return nn.functional.nll_loss(log_probs.reshape(-1, log_probs.shape[-1]), y_query.reshape(-1))


class SupportContext(nn.Module):
    """g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i): a bidirectional LSTM read over the support set, with a skip."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)

    def forward(self, g_prime: torch.Tensor) -> torch.Tensor:
        dim = g_prime.shape[-1]
        out, _ = self.lstm(g_prime)  # [tasks, n_support, 2 * dim]: forward then backward states
        return out[..., :dim] + out[..., dim:] + g_prime  # [tasks, n_support, dim]


class QueryContext(nn.Module):
    """f(x_hat, S) = attLSTM(f'(x_hat), g(S), K): an LSTM whose state [h, r] reads the support set K times.

    The LSTM cell is written out because its recurrent input [h_{k-1}, r_{k-1}] (size 2D)
    is larger than its output h_hat_k (size D), which ``nn.LSTMCell`` does not allow.
    """

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"the attLSTM needs at least one read step, got K = {steps}")
        self.steps = steps
        self.from_input = nn.Linear(dim, 4 * dim)  # acts on f'(x_hat)
        self.from_state = nn.Linear(2 * dim, 4 * dim, bias=False)  # acts on [h_{k-1}, r_{k-1}]

    def read(self, h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """r = sum_i softmax_i(h^T g(x_i)) g(x_i): ``[tasks, n_query, D]``, ``[tasks, n_support, D]`` -> ``[tasks, n_query, D]``."""
        return torch.softmax(h @ g.transpose(1, 2), dim=-1) @ g

    def forward(self, f_prime: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        h = f_prime  # h_0 [tasks, n_query, D]
        c = torch.zeros_like(f_prime)  # c_0
        x_part = self.from_input(f_prime)  # the input is f'(x_hat) at every step: [tasks, n_query, 4D]
        for _ in range(self.steps):
            r = self.read(h, g)  # r_{k-1}
            gates = x_part + self.from_state(torch.cat([h, r], -1))
            i, f, o, u = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(u)  # c_k
            h_hat = torch.sigmoid(o) * torch.tanh(c)  # h_hat_k
            h = h_hat + f_prime  # h_k, with the skip connection
        return h  # f(x_hat, S) = h_K


class MatchingNet(MetricModel):
    """Conv4 embeddings, optional full context embeddings, cosine attention over the support set.

    ``forward(episodes)`` returns log P(y | x_hat, S) for every query, ``[tasks, n_query_total, n_way]``.
    """

    def __init__(self, settings: MatchingSettings, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.settings = settings
        self.encoder = Conv4(in_channels, settings.hidden, image_size=image_size)
        dim = self.encoder.out_dim
        self.support_context = SupportContext(dim) if settings.fce else None
        self.query_context = QueryContext(dim, settings.read_steps) if settings.fce else None

    # embed (f' = g') and forward (support and query through the CNN in one call) come from MetricModel

    def contextual(self, z_support: torch.Tensor, z_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g(x_i, S) and f(x_hat, S) (the plain embeddings when FCE is off)."""
        if not self.settings.fce:
            return z_support, z_query
        g = self.support_context(z_support)  # [tasks, n_support, D]
        return g, self.query_context(z_query, g)  # [tasks, n_query, D]

    def attention(self, z_support: torch.Tensor, z_query: torch.Tensor) -> torch.Tensor:
        """a(x_hat, x_i) after the context embeddings: ``[tasks, n_query, n_support]``."""
        g, f = self.contextual(z_support, z_query)
        return attention(f, g, self.settings.cosine_scale)

    def logits(self, z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor, n_way: int) -> torch.Tensor:
        """log y_hat, ``[tasks, n_query, n_way]`` (log-probabilities: argmax is the prediction)."""
        probs = attend(self.attention(z_support, z_query), y_support, n_way)
        return probs.clamp_min(1e-12).log()


# ----------------------------------------------------------------------------- training and testing


def train_matching(
    settings: MatchingSettings,
    data: ClassImageSet,
    device: str | torch.device = "cpu",
    seed: int = 0,
    checkpoint: str | Path | bool | None = None,
    progress: bool = True,
) -> tuple[MatchingNet, History]:
    """Episodic training on ``data`` (the background split); returns the model and its history.

    ``checkpoint``: see :func:`metaedu.checkpoints.resolve` (``None``: as ``settings.checkpoint`` says).
    """
    checkpoint = resolve(checkpoint, "matching", settings, data, seed)
    with seeded(seed):  # the initial weights depend on the seed only
        model = MatchingNet(settings, data.image_shape[0], data.image_shape[-1])
    name = "Matching Net" + (" (FCE)" if settings.fce else "")
    history = train_on_episodes(model, settings, data, episode_loss, device, seed, checkpoint, progress, name)
    return model, history


# evaluate(model, data, n_way, k_shot, ...) and predict(model, episodes) (log P(y | x_hat, S) in evaluation
# mode) are the metric-learning trio's shared ones (metaedu.algorithms.metric), imported above.
