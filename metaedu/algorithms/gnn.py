"""Few-shot learning with graph neural networks (Garcia & Bruna, ICLR 2018).

An episode becomes a graph: one node per image, support and query alike, and the network reads
the query's class off its node after a few rounds of message passing. The paper, in order:

1. **Node features** (:func:`node_features`): x_i^(0) = (phi(x_i), h(l_i)), the image embedding
   phi (a :class:`~metaedu.nn.backbones.Conv4`) next to a label vector h: one-hot for a labelled
   support image, uniform 1/K over the K classes for an unlabelled image and for a query.
2. **Learned edge features** (:class:`EdgeFunction`), recomputed before every layer k:
   A~^(k)_ij = softmax_j( MLP_theta~( |x_i^(k) - x_j^(k)| ) ), over the nodes j != i that send.
3. **Graph convolution** (:class:`GraphConv`): with the operator family {I, A~^(k)},
   Gc(x^(k)) = rho( x^(k) theta_I + A~^(k) x^(k) theta_A ) (rho a leaky ReLU), and, as in the
   authors' code, the new features are appended to the old: x^(k+1) = [x^(k), Gc(x^(k))].
4. A last adjacency and graph convolution without rho give K class scores per node; the loss is
   the cross-entropy of the query nodes' scores (:func:`episode_loss`).
5. **Semi-supervised**: unlabelled support images are nodes with a uniform label vector; the
   "labelled only" baseline leaves them out of the graph (:func:`prepare`).
6. **Active learning**: after the first layer, a softmax attention over the unlabelled nodes,
   Attention = softmax(g(x^(1)_{1..r})), picks one whose label is revealed (sampled in training,
   the arg-max at test time). Its label slot becomes the true one-hot times w / sg(w), which is 1
   in value and carries the attention's gradient (the slide's w h(l) has the same direction of
   gradient but shrinks the revealed label by w).

Special cases (the slides, :func:`siamese_adjacency` and :func:`prototype_adjacency`): a single
propagation with A~ = softmax(-||phi(x_i) - phi(x_j)||) reads off the nearest support image
(a Siamese network's rule), and A~^(0)_ij = 1/q for l_i = l_j followed by a softmax over negative
squared distances gives a Prototypical Network's probabilities.

**Our one structural choice.** Query nodes receive messages but send none: nodes are ordered
[support (labelled and unlabelled); queries], the first S send, and every adjacency is
``[tasks, nodes, S]``. Many queries then share one graph without seeing each other (no
transduction), which makes training far cheaper; with a single query, as in the paper, the only
difference is that the support nodes do not hear the query. The authors' code also puts batch
norm after each linear map of the edge MLP and of the graph convolutions; we leave it out, so a
node's output depends on its own episode only.

Symbols -> names: phi = ``GNN.encoder``, K = ``n_way``, h = :func:`label_vectors`, A~ = the
output of :class:`EdgeFunction`, theta_I and theta_A = the two halves of ``GraphConv.theta``,
g = ``GNN.attention``, r = the unlabelled nodes, q = ``k_shot``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.algorithms.metric import MetricModel
from metaedu.checkpoints import resolve
from metaedu.data.base import ClassImageSet
from metaedu.data.embedded import EmbeddedSet
from metaedu.evaluation import episode_accuracies as scored_episodes
from metaedu.evaluation import features_of
from metaedu.nn.backbones import Conv4
from metaedu.runtime import check_settings, evaluation_mode, seeded
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.training import History, train

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


# ----------------------------------------------------------------------------- the graph


def label_vectors(y: torch.Tensor, n_way: int) -> torch.Tensor:
    """h(l): ``[tasks, n]`` labels (-1: unknown) -> ``[tasks, n, K]`` one-hot rows, uniform 1/K where unknown."""
    if y.numel() and (int(y.min()) < -1 or int(y.max()) >= n_way):
        raise ValueError(f"labels must lie in 0..{n_way - 1}, or be -1 for an unlabelled node; "
                         f"got values from {int(y.min())} to {int(y.max())}")
    onehot = F.one_hot(y.clamp_min(0), n_way).float()
    return torch.where((y >= 0)[..., None], onehot, torch.full_like(onehot, 1.0 / n_way))


def node_features(z: torch.Tensor, y: torch.Tensor, n_way: int) -> torch.Tensor:
    """x^(0) = (phi(x), h(l)): embeddings ``[tasks, n, D]`` and labels ``[tasks, n]`` -> ``[tasks, n, D + K]``."""
    return torch.cat([z, label_vectors(y, n_way).to(z.dtype)], -1)


def masked_softmax(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis among the ``valid`` entries; a row with none gives zeros (not NaN)."""
    return torch.softmax(scores.masked_fill(~valid, -1e9), -1) * valid


def receives_from(n_nodes: int, n_senders: int, device=None) -> torch.Tensor:
    """``[n_nodes, n_senders]``: node i hears sender j when j != i."""
    return ~torch.eye(n_nodes, n_senders, dtype=torch.bool, device=device)


def propagate(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(A x)_i = sum_j A_ij x_j over the senders: ``[tasks, n, S]``, ``[tasks, n, F]`` -> ``[tasks, n, F]``."""
    return adjacency @ x[:, : adjacency.shape[-1]]


class EdgeFunction(nn.Module):
    """A~_ij = softmax_j MLP(|x_i - x_j|): ``x`` ``[tasks, n, F]`` -> ``[tasks, n, S]`` (the first S nodes send)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def scores(self, x: torch.Tensor, n_senders: int) -> torch.Tensor:
        """MLP(|x_i - x_j|) before the softmax, ``[tasks, n, S]``."""
        diff = (x[:, :, None, :] - x[:, None, :n_senders, :]).abs()  # [tasks, n, S, F]
        return self.mlp(diff).squeeze(-1)

    def forward(self, x: torch.Tensor, n_senders: int | None = None) -> torch.Tensor:
        s = x.shape[1] if n_senders is None else n_senders
        return masked_softmax(self.scores(x, s), receives_from(x.shape[1], s, x.device))


class GraphConv(nn.Module):
    """Gc(x) = rho(x theta_I + (A x) theta_A + b): ``[tasks, n, F]`` and ``A`` ``[tasks, n, S]`` -> ``[tasks, n, out]``."""

    def __init__(self, in_dim: int, out_dim: int, activation: bool = True) -> None:
        super().__init__()
        self.theta = nn.Linear(2 * in_dim, out_dim)  # [theta_I; theta_A] stacked, one bias
        self.activation = activation

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        out = self.theta(torch.cat([x, propagate(adjacency, x)], -1))  # the operators I and A~
        return F.leaky_relu(out, 0.2) if self.activation else out


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


# ----------------------------------------------------------------------------- the special cases


def siamese_adjacency(z_query: torch.Tensor, z_support: torch.Tensor, similarity=None) -> torch.Tensor:
    """A~ = softmax_j(-phi(x_i, x_j)) of each query over the support images, ``[tasks, Q, S]``.

    phi = ||phi(x_i) - phi(x_j)|| by default; ``similarity(z_query, z_support)`` replaces -phi (e.g. a
    Siamese network's learned ``pair_logits``).
    """
    scores = -torch.cdist(z_query, z_support) if similarity is None else similarity(z_query, z_support)
    return torch.softmax(scores, -1)


def siamese_as_gnn(z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor, n_way: int,
                   similarity=None) -> torch.Tensor:
    """One propagation of the label vectors with the Siamese adjacency: Y^_* = sum_j A~_*j h(l_j), ``[tasks, Q, K]``.

    Its arg-max is the label of the most similar support image whenever each class has one shot.
    """
    x0 = node_features(z_support, y_support, n_way)  # [tasks, S, D + K]
    adjacency = siamese_adjacency(z_query, z_support, similarity)  # [tasks, Q, S]
    return propagate(adjacency, x0)[..., z_support.shape[-1]:]  # <x_j, u>: u reads the label slot


def prototype_adjacency(y_support: torch.Tensor, n_way: int) -> torch.Tensor:
    """A~^(0)_ij = 1 / q if l_i = l_j else 0 among the support images, ``[tasks, S, S]`` (q: shots of the class)."""
    same = (y_support[:, :, None] == y_support[:, None, :]).float()  # [tasks, S, S]
    return same / same.sum(-1, keepdim=True)


def prototypical_as_gnn(z_support: torch.Tensor, y_support: torch.Tensor, z_query: torch.Tensor,
                        n_way: int) -> torch.Tensor:
    """A Prototypical Network written as two graph layers, ``[tasks, Q, K]`` class probabilities.

    Layer 1: x^(1) = A~^(0) x^(0) turns every support node into its class's (prototype, label); the
    query keeps its own features (the identity operator). Layer 2: A~^(1)_*j = softmax_j(-||x_*^(1) -
    x_j^(1)||^2) over the support nodes, and Y^_* = sum_j A~^(1)_*j <x_j^(1), u>.
    """
    d = z_support.shape[-1]
    x1 = propagate(prototype_adjacency(y_support, n_way), node_features(z_support, y_support, n_way))
    adjacency = torch.softmax(-torch.cdist(z_query, x1[..., :d]).pow(2), -1)  # [tasks, Q, S]
    return propagate(adjacency, x1)[..., d:]


# ----------------------------------------------------------------------------- episodes with hidden labels


def prepare(episodes, settings: GNNSettings, labelled_shots: int | None = None):
    """The support set as the GNN sees it: ``(x_support, y_shown, oracle)``.

    The first ``labelled_shots`` shots of each class (the shots are in random order) keep their
    label; the others get -1 (``settings.unlabelled == "keep"``) or are removed ("drop").
    ``oracle`` holds the true labels of the nodes kept.
    """
    shown = settings.shown() if labelled_shots is None else labelled_shots
    k = episodes.k_shot
    if not 1 <= shown <= k:
        raise ValueError(f"labelled_shots must lie in 1..{k} (the episodes' shots), got {shown}")
    shot = torch.arange(episodes.x_support.shape[1], device=episodes.y_support.device) % k  # shot index
    labelled = shot < shown
    if settings.unlabelled == "drop":
        return episodes.x_support[:, labelled], episodes.y_support[:, labelled], episodes.y_support[:, labelled]
    y_shown = torch.where(labelled, episodes.y_support, torch.full_like(episodes.y_support, -1))
    return episodes.x_support, y_shown, episodes.y_support


def episode_logits(model: GNN, episodes, labelled_shots: int | None = None, generator: torch.Generator | None = None,
                   source: ClassImageSet | None = None) -> torch.Tensor:
    """Query scores ``[tasks, n_query_total, K]`` of a batch of episodes, support labels hidden as the settings say.

    ``source``: the set the episodes were drawn from, when it is an :class:`EmbeddedSet` made by
    ``model.encoder`` (then the "images" already are phi's embeddings).
    """
    x_support, y_shown, oracle = prepare(episodes, model.settings, labelled_shots)
    s = x_support.shape[1]
    x = torch.cat([x_support, episodes.x_query], 1)
    if model.feature_dim is None and isinstance(source, EmbeddedSet):
        z = features_of(model.encoder, x, source)  # [tasks, S + Q, D]
    else:
        z = model.embed(x)  # one CNN call: [tasks, S + Q, D]
    return model.logits(z[:, :s], y_shown, z[:, s:], episodes.n_way, oracle=oracle, generator=generator)


# ----------------------------------------------------------------------------- training and testing


def build(settings: GNNSettings, data: ClassImageSet, seed: int = 0) -> GNN:
    """A GNN for ``data``: a Conv4 on images, or graph layers only on an :class:`EmbeddedSet`'s features."""
    with seeded(seed):  # the initial weights depend on the seed only
        if isinstance(data, EmbeddedSet):
            return GNN(settings, feature_dim=data.image_shape[0])
        return GNN(settings, data.image_shape[0], data.image_shape[-1])


def train_gnn(settings: GNNSettings, data: ClassImageSet, device: str | torch.device = "cpu", seed: int = 0,
              checkpoint: str | Path | bool | None = None, progress: bool = True, model: GNN | None = None,
              max_seconds: float | None = None) -> tuple[GNN, History]:
    """Meta-train on episodes of ``data`` (images, or an :class:`EmbeddedSet` for the graph layers alone).

    Each step draws ``settings.tasks`` episodes of ``n_way`` classes with ``k_shot`` support and
    ``train_query`` query images per class, hides labels as the settings say, and takes one Adam
    step on the query cross-entropy. ``checkpoint``: see :func:`metaedu.checkpoints.resolve`.
    """
    device = torch.device(device)
    checkpoint = resolve(checkpoint, "gnn", settings, data, seed, model)
    model = (model if model is not None else build(settings, data, seed)).to(device)
    if model.settings is not settings:
        model.settings = settings
    sampler = EpisodeSampler(data, settings.n_way, settings.k_shot, settings.train_query, device=device, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=settings.lr_halve_every, gamma=0.5)
    model.train()

    def step(i: int) -> dict:
        eps = sampler.sample(settings.tasks)
        out = episode_logits(model, eps, generator=sampler.generator)  # [tasks, n_way * train_query, n_way]
        loss = episode_loss(out, eps.y_query)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.detach(), "accuracy": (out.argmax(-1) == eps.y_query).float().mean() * 100}

    state = {"model": model, "opt": opt, "sched": sched, "sampler": sampler.generator}
    history = train(step, settings.steps, state=state, checkpoint=checkpoint, progress=progress, desc="GNN",
                    max_seconds=max_seconds)
    return model, history


def episode_accuracies(model: GNN, data: ClassImageSet, k_shot: int | None = None, labelled_shots: int | None = None,
                       n_query: int | None = None, n_episodes: int | None = None,
                       device: str | torch.device = "cpu", seed: int = 0) -> torch.Tensor:
    """Query accuracy (%) on each of ``n_episodes`` test episodes of ``data`` (``[n_episodes]``, for paired
    comparisons): ``n_way`` of the model, ``k_shot`` support images per class of which ``labelled_shots``
    are labelled (defaults: the settings'), scored in evaluation mode (active learning takes the arg-max).
    Two calls with the same ``seed`` and sizes see the same episodes.
    """
    s = model.settings
    sampler = EpisodeSampler(data, s.n_way, k_shot or s.k_shot, n_query or s.eval_query, device=device, seed=seed)
    with evaluation_mode(model):
        return scored_episodes(lambda eps: episode_logits(model, eps, labelled_shots, source=data), sampler,
                               n_episodes or s.eval_episodes)
