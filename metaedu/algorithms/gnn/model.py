"""The few-shot GNN's settings and network (phi, the graph layers, active learning's attention).
See :mod:`metaedu.algorithms.gnn` for the paper's symbols."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.algorithms.gnn.graph import EdgeFunction, GraphConv, masked_softmax, node_features
from metaedu.algorithms.metric import MetricModel
from metaedu.nn.backbones import Conv4
from metaedu.runtime import check_settings

UNLABELLED = ("keep", "drop")
CHOICES = ("attention", "random")


@dataclass
class GNNSettings:
    """Few-shot GNN on 5-way 1-shot glyph episodes (the paper's Omniglot setting in full mode)."""

    n_way: int = 5  # K: classes per episode, the length of the label vector h(l)
    k_shot: int = 1  # support images per class, labelled or not
    labelled_shots: int | None = None  # how many of them per class show their label (None: all)
    unlabelled: str = "keep"  # the other shots: "keep" as nodes with a uniform label, or "drop" them
    active: bool = False  # active learning: after the first layer, reveal the label of one unlabelled node
    choice: str = "attention"  # which node active learning reveals: "attention" (learned) or "random"
    train_query: int = 1  # query nodes per class in a training episode (they do not send messages)
    hidden: int = 64  # Conv4 filters per block = the embedding size D of a 28 x 28 glyph
    gc_width: int = 48  # features each graph convolution appends (48 = nf / 2 in the authors' code)
    edge_hidden: tuple[int, ...] = (128, 96, 64, 64)  # hidden widths of the edge MLP (ratios 2, 1.5, 1, 1 of 64)
    layers: int = 2  # graph convolutions before the last one
    readout_init: float = 5.0  # the last layer's theta_A starts as this times a read-out of the label slot (0: random)
    tasks: int = 300  # episodes per meta-batch
    steps: int = 100000  # meta-batches
    lr: float = 1e-3  # Adam's learning rate
    lr_halve_every: int = 10000  # halve the learning rate every this many meta-batches
    eval_episodes: int = 1000  # test episodes behind each reported accuracy
    eval_query: int = 5  # query images per class in test episodes
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "GNNSettings":
        """A laptop CPU: a small graph network trained for 300 meta-batches of 8 episodes (the lecture trains it on
        a frozen encoder's features; ``hidden`` sizes the Conv4 when it is trained end to end)."""
        return cls(hidden=16, gc_width=16, edge_hidden=(32,), train_query=4, tasks=8, steps=300, lr=3e-3,
                   lr_halve_every=1000, eval_episodes=300)

    @classmethod
    def full(cls) -> "GNNSettings":
        """Garcia & Bruna's 5-way 1-shot Omniglot run: 300 episodes a batch, 100k batches, halved every 10k."""
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("n_way", "k_shot", "train_query", "hidden", "gc_width", "edge_hidden",
                                       "tasks", "steps", "lr", "lr_halve_every", "eval_episodes", "eval_query"),
                       non_negative=("layers", "readout_init"), choices={"unlabelled": UNLABELLED, "choice": CHOICES})
        name = type(self).__name__
        if self.labelled_shots is not None and not 1 <= self.labelled_shots <= self.k_shot:
            raise ValueError(f"{name}.labelled_shots must lie in 1..k_shot ({self.k_shot}) or be None, "
                             f"got {self.labelled_shots!r}")
        if self.active and (self.layers < 1 or self.unlabelled != "keep" or self.shown() == self.k_shot):
            raise ValueError(f"{name}.active needs layers >= 1 and unlabelled nodes kept in the graph "
                             f"(labelled_shots < k_shot, unlabelled='keep')")

    def shown(self) -> int:
        """Labelled shots per class."""
        return self.k_shot if self.labelled_shots is None else self.labelled_shots


@dataclass
class TwentyWayGNNSettings(GNNSettings):
    """Few-shot GNN on 20-way 1-shot episodes (the paper: 100 episodes a batch, 80k batches)."""

    n_way: int = 20  # K
    tasks: int = 100  # episodes per meta-batch
    steps: int = 80000  # meta-batches

    @classmethod
    def quick(cls) -> "TwentyWayGNNSettings":
        return cls(hidden=16, gc_width=16, edge_hidden=(32,), train_query=1, tasks=8, steps=300, lr=3e-3,
                   lr_halve_every=1000, eval_episodes=300)

    @classmethod
    def full(cls) -> "TwentyWayGNNSettings":
        return cls(checkpoint=True)


@dataclass
class SemiSupervisedGNNSettings(GNNSettings):
    """5-way 5-shot episodes with 20% of the support labelled (the paper's semi-supervised Omniglot run)."""

    k_shot: int = 5  # support images per class
    labelled_shots: int | None = 1  # 1 of 5 labelled: 20%
    tasks: int = 100  # episodes per meta-batch
    steps: int = 80000  # meta-batches

    @classmethod
    def quick(cls) -> "SemiSupervisedGNNSettings":
        return cls(hidden=16, gc_width=16, edge_hidden=(32,), train_query=2, tasks=8, steps=300, lr=3e-3,
                   lr_halve_every=1000, eval_episodes=300)

    @classmethod
    def full(cls) -> "SemiSupervisedGNNSettings":
        return cls(checkpoint=True)


class GNN(MetricModel):
    """phi and the graph network; ``logits(z_support, y_support, z_query, n_way)`` scores the queries.

    ``feature_dim``: the inputs are already D-dimensional features (an
    :class:`~metaedu.data.embedded.EmbeddedSet`), so phi is a flattening only and only the graph
    layers learn.
    """

    def __init__(self, settings: GNNSettings, in_channels: int = 1, image_size: int = 28,
                 feature_dim: int | None = None) -> None:
        super().__init__()
        self.settings = s = settings
        self.feature_dim = feature_dim
        if feature_dim is None:
            self.encoder = Conv4(in_channels, s.hidden, image_size=image_size)
        else:
            self.encoder = nn.Flatten()
        width = (self.encoder.out_dim if feature_dim is None else feature_dim) + s.n_way  # D + K
        self.label_slot = slice(width - s.n_way, width)  # where h(l) sits in x^(k)
        self.edges, self.convs = nn.ModuleList(), nn.ModuleList()
        for _ in range(s.layers):
            self.edges.append(EdgeFunction(width, s.edge_hidden))
            self.convs.append(GraphConv(width, s.gc_width))
            width += s.gc_width
        self.last_edge = EdgeFunction(width, s.edge_hidden)
        self.last_conv = GraphConv(width, s.n_way, activation=False)
        with torch.no_grad():  # start at "the class scores are the neighbours' labels, weighted by A~" (the Siamese case)
            cols = torch.arange(self.label_slot.start, self.label_slot.stop) + width  # h(l) inside the A x half
            self.last_conv.theta.weight[torch.arange(s.n_way), cols] += s.readout_init
        first = self.label_slot.stop + (s.gc_width if s.layers else 0)  # width of x^(1)
        self.attention = nn.Sequential(nn.Linear(first, first), nn.LeakyReLU(0.2), nn.Linear(first, 1)) \
            if s.active else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[tasks, n, C, H, W]`` images (or ``[tasks, n, D, 1, 1]`` features) -> ``[tasks, n, D]``."""
        return x.flatten(2) if self.feature_dim is not None else super().embed(x)

    def graph(self, x: torch.Tensor, n_senders: int, reveal=None) -> torch.Tensor:
        """Class scores ``[tasks, n, K]`` of every node of the graphs ``x`` ``[tasks, n, D + K]``.

        ``reveal(x1)`` (active learning) may rewrite the features after the first layer.
        """
        for k, (edge, conv) in enumerate(zip(self.edges, self.convs)):
            x = torch.cat([x, conv(x, edge(x, n_senders))], -1)  # x^(k+1) = [x^(k), Gc(x^(k))]
            if k == 0 and reveal is not None:
                x = reveal(x)
        return self.last_conv(x, self.last_edge(x, n_senders))

    def logits(self, z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor, n_way: int,
               oracle: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Query scores ``[tasks, n_query, K]``; ``y_support`` may hold -1 for unlabelled support images.

        ``oracle`` (active learning): the true labels of the support images ``[tasks, S]``;
        ``generator`` draws the revealed node in training mode.
        """
        if n_way != self.settings.n_way:
            raise ValueError(f"this GNN was built for {self.settings.n_way}-way episodes, got n_way={n_way}")
        s = z_support.shape[1]
        unknown = torch.full(z_query.shape[:2], -1, dtype=torch.long, device=z_query.device)
        x = node_features(torch.cat([z_support, z_query], 1), torch.cat([y_support, unknown], 1), n_way)
        reveal = None
        if self.attention is not None:
            if oracle is None:
                raise ValueError("an active-learning GNN needs the support set's true labels (oracle=...)")
            reveal = lambda x1: self.reveal_one(x1, y_support, oracle, generator)  # noqa: E731
        return self.graph(x, s, reveal)[:, s:]

    @torch.no_grad()
    def adjacencies(self, z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor) -> list[torch.Tensor]:
        """The learned A~^(k) of every layer, last one included, each ``[tasks, S + Q, S]`` (for figures)."""
        if self.attention is not None:
            raise ValueError("adjacencies() draws plain and semi-supervised GNNs; an active one changes its graph")
        s = z_support.shape[1]
        unknown = torch.full(z_query.shape[:2], -1, dtype=torch.long, device=z_query.device)
        x = node_features(torch.cat([z_support, z_query], 1), torch.cat([y_support, unknown], 1), self.settings.n_way)
        found = []
        for edge, conv in zip(self.edges, self.convs):
            found.append(edge(x, s))
            x = torch.cat([x, conv(x, found[-1])], -1)
        found.append(self.last_edge(x, s))
        return found

    def choice_weights(self, x1: torch.Tensor, y_support: torch.Tensor) -> torch.Tensor:
        """Attention over the unlabelled support nodes, ``[tasks, S]`` (zero on labelled ones)."""
        s = y_support.shape[1]
        hidden = y_support < 0  # [tasks, S]
        if self.settings.choice == "random":
            return hidden.float() / hidden.sum(-1, keepdim=True).clamp_min(1)
        return masked_softmax(self.attention(x1[:, :s]).squeeze(-1), hidden)

    def reveal_one(self, x1: torch.Tensor, y_support: torch.Tensor, oracle: torch.Tensor,
                   generator: torch.Generator | None) -> torch.Tensor:
        """Write the true label of one chosen unlabelled node into its label slot of ``x1`` ``[tasks, n, F1]``."""
        w = self.choice_weights(x1, y_support)  # [tasks, S]
        if not bool((y_support < 0).any(-1).all()):
            raise ValueError("active learning needs at least one unlabelled support image in every episode")
        if self.training:  # sample a node from the attention (inverse CDF: a uniform from our generator)
            u = torch.rand(w.shape[0], 1, generator=generator).to(w.device)
            pick = (w.detach().cumsum(-1) < u).sum(-1).clamp_max(w.shape[1] - 1)
        else:
            pick = w.detach().argmax(-1)  # [tasks]
        chosen = F.one_hot(pick, x1.shape[1]).to(x1.dtype)[..., None]  # [tasks, n, 1]
        w_pick = w.gather(1, pick[:, None])  # [tasks, 1]
        scale = w_pick / w_pick.detach()  # value 1, gradient of the attention
        label = F.one_hot(oracle.gather(1, pick[:, None])[:, 0], self.settings.n_way).to(x1.dtype) * scale
        slot = torch.zeros(x1.shape[-1], dtype=x1.dtype, device=x1.device)
        slot[self.label_slot] = 1.0
        new_slot = F.pad(label, (self.label_slot.start, x1.shape[-1] - self.label_slot.stop))[:, None]  # [tasks, 1, F1]
        return x1 * (1 - chosen * slot) + chosen * new_slot


def episode_loss(logits: torch.Tensor, y_query: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the query nodes' scores, averaged over queries and episodes."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_query.reshape(-1))
