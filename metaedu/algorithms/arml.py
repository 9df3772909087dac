"""Automated Relational Meta-Learning, ARML (Yao, Wu, Tao, Li, Ding, Li & Li, ICLR 2020), for regression.

MAML gives every task the same initialisation theta_0. When tasks come from very different
families (sinusoids, lines, surfaces...), ARML tailors it: it summarises the task's support set
as a small graph of prototypes, lets that graph consult a learned "meta-knowledge" graph shared
by all tasks, and turns the result into a gate on theta_0. In the paper's order:

1. **Prototypes** (:meth:`ARML.prototypes`). Each support pair is embedded, F(x_j, y_j) = W_e [x_j; y_j] + b_e,
   and (regression has no classes) softly assigned to K clusters,
   P_i = softmax(W_p E^T(X) + b_p) (a softmax over the K clusters of each sample), c^k = P_i[k] F(X).
   (With classes, c^k is the class mean of the embeddings, as in a Prototypical Network.) We divide
   by sum_j P_i[j, k], so that c^k is the weighted *mean* of its samples, as the class prototype is a
   mean: with the plain sum the prototypes' size follows the number of samples, and in our runs on
   validation tasks every task's A_S then fell on one and the same vertex (and the MSE was worse).
2. **Prototype-based relational graph** R_i = (C_R, A_R) (:meth:`ARML.relational_graph`):
   A_R(c^j, c^m) = sigmoid(W_r |c^j - c^m| / gamma_r + b_r).
3. **Meta-knowledge graph** G = (H_G, A_G) (:meth:`ARML.knowledge_graph`): G learned vertices
   h^1..h^G in R^d and A_G(h^j, h^m) = sigmoid(W_o |h^j - h^m| / gamma_o + b_o).
4. **Super-graph** S_i = (A_i, H_i) (:func:`super_graph_similarity`, :meth:`ARML.super_graph`):
   A_i = (A_R, A_S; A_S^T, A_G), H_i = (C_R; H_G), with each prototype's similarity to the vertices
   A_S(c^j, h^k) = softmax_k( -||(c^j - h^k) / gamma_s||^2 / 2 ).
5. **Message passing** (:func:`message_passing`): H^(l+1) = MP(A_i, H^(l); W^(l)); the first K rows
   after the last layer are the information-propagated prototypes C^_R. As in the authors' code,
   MP(A, H; W) = tanh(D^-1 (A + I) H W + b) with D the row sums of A + I, and the diagonals of
   A_R and A_G are zero (self-loops come from the I). After one layer a prototype's row has heard
   only A_R and A_S; the vertices' own edges A_G reach it from the second layer on, so we pass
   messages twice (``mp_layers``; the tests show A_G is inert with one layer).
6. **Task representations** (:class:`Autoencoder`): q_i = MeanPool(AG^q(C_R)), t_i = MeanPool(AG^t(C^_R)),
   with reconstruction losses L_q = ||C_R - AG^q_dec(AG^q(C_R))||^2 and L_t likewise (we average
   the squares over entries, as the authors' code does; the weights mu below are set for that).
7. **Modulated initialisation** (:meth:`ARML.initialisation`): theta_0i = sigmoid(W_g (t_i + q_i) + b_g) o theta_0,
   one gate per entry of theta_0 (+ is concatenation).
8. **Adaptation and objective** (:meth:`ARML.meta_loss`): theta_i = theta_0i - alpha grad L(f_theta, D_i^tr)
   (the batched MAML core of lecture 06, :meth:`MAML.adapt` started from theta_0i), and
   min_Phi sum_i L(f_theta_i, D_i^ts) + mu_1 L_t + mu_2 L_q.

Symbols -> names: theta_0 = ``ARML.learner.model``'s weights, alpha = ``inner_lr``, beta = ``outer_lr``,
K = ``prototypes``, G = ``vertices``, d = ``embed_dim``, mu_1 = mu_2 = ``aux_weight``, gamma_* = ``gamma_*``.
With ``modulate=False`` the gate is 1 (theta_0i = theta_0), and with ``aux_weight=0`` ARML's
meta-gradient on theta_0 is MAML's (the tests check it). The authors' aggregators AG are recurrent
autoencoders run over the prototypes in order; ours encode each prototype alone, which keeps q_i
and t_i independent of the prototypes' order, as the slides' mean-pooling formula reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from metaedu.algorithms.maml import MAML, task_loss
from metaedu.checkpoints import resolve
from metaedu.nn.backbones import MLP
from metaedu.nn.functional import Params, batched_forward, parameter_dict, per_task
from metaedu.runtime import check_settings, seeded
from metaedu.tasks.regression import RegressionTasks
from metaedu.training import History, train


@dataclass
class ARMLSettings:
    """ARML (and the MAML baseline beside it) on the six 2-D regression families, 10-shot."""

    k_shot: int = 10  # support points per task
    n_query: int = 10  # query points per task
    hidden: tuple[int, ...] = (40, 40)  # hidden layers of the base learner, an MLP 2-40-40-1
    inner_lr: float = 0.001  # alpha (the authors' 2-D script keeps its default, 0.001)
    inner_steps: int = 5  # inner steps while meta-training
    test_inner_steps: int = 5  # inner steps when adapting to a test task
    first_order: bool = False  # drop second derivatives in the meta-gradient
    outer_lr: float = 0.001  # beta, Adam's step size
    meta_batch: int = 25  # tasks per meta-update
    steps: int = 70000  # meta-updates
    embed_dim: int = 40  # d: width of a sample's embedding F(x, y) and of the graphs' node features
    prototypes: int = 2  # K: clusters a task's support points are assigned to
    vertices: int = 6  # G: vertices of the meta-knowledge graph
    code: int = 40  # width of the task representations q_i and t_i
    mp_layers: int = 2  # message-passing layers on the super-graph (with 1, A_G cannot reach the prototypes)
    gamma_r: float = 1.0  # gamma_r: scale of prototype differences in A_R
    gamma_o: float = 1.0  # gamma_o: scale of vertex differences in A_G
    gamma_s: float = 2.0**0.5  # gamma_s: scale in A_S (the authors' exp(-d^2 / (2 * 2)))
    aux_weight: float = 0.01  # mu_1 = mu_2: weight of the reconstruction losses L_t and L_q
    modulate: bool = True  # gate theta_0 per task (False: theta_0i = theta_0)
    eval_tasks: int = 1000  # test tasks behind each reported MSE
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "ARMLSettings":
        """A laptop CPU: two inner steps of a larger alpha, a few hundred meta-updates of 10 tasks. gamma_s = 5
        was chosen on validation tasks (seed 50, not the lecture's test seed) among sqrt(2) and 5: with the
        short training the wider A_S let the 1-D and the 2-D families settle on different vertices."""
        return cls(inner_lr=0.01, inner_steps=2, test_inner_steps=2, meta_batch=10, steps=600, outer_lr=0.003,
                   gamma_s=5.0, eval_tasks=600)

    @classmethod
    def full(cls) -> "ARMLSettings":
        """Yao et al.'s 2-D setting: 70,000 meta-updates of 25 tasks, 5 inner steps, G = 6, mu = 0.01."""
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("k_shot", "n_query", "hidden", "inner_lr", "outer_lr", "meta_batch", "steps",
                                       "embed_dim", "prototypes", "vertices", "code", "gamma_r", "gamma_o", "gamma_s",
                                       "eval_tasks"),
                       non_negative=("inner_steps", "test_inner_steps", "mp_layers", "aux_weight"))


# ----------------------------------------------------------------------------- the graphs


def relation(a: torch.Tensor, b: torch.Tensor, layer: nn.Linear, gamma: float) -> torch.Tensor:
    """sigmoid(W |a_j - b_m| / gamma + b) for every pair, zero where j = m: ``[..., n, d]`` -> ``[..., n, n]``."""
    weights = torch.sigmoid(layer((a[..., :, None, :] - b[..., None, :, :]).abs() / gamma)).squeeze(-1)
    return weights * (1 - torch.eye(weights.shape[-1], device=weights.device))


def super_graph_similarity(c: torch.Tensor, h: torch.Tensor, gamma_s: float) -> torch.Tensor:
    """A_S(c^j, h^k) = softmax_k(-||(c^j - h^k) / gamma_s||^2 / 2): ``[tasks, K, d]``, ``[G, d]`` -> ``[tasks, K, G]``."""
    d2 = ((c[:, :, None, :] - h[None, None, :, :]) / gamma_s).pow(2).sum(-1)  # [tasks, K, G]
    return torch.softmax(-d2 / 2, -1)


def message_passing(a: torch.Tensor, h: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """MP(A, H; W) = tanh(D^-1 (A + I) H W + b): ``[tasks, n, n]``, ``[tasks, n, d]`` -> ``[tasks, n, d]``."""
    a = a + torch.eye(a.shape[-1], device=a.device)
    return torch.tanh((a / a.sum(-1, keepdim=True)) @ layer(h))  # rows of D^-1 (A + I) sum to 1: the bias passes as is


class Autoencoder(nn.Module):
    """AG and AG_dec: each row encoded alone; ``forward(C)`` -> (MeanPool of the codes, mean squared reconstruction error)."""

    def __init__(self, dim: int, code: int) -> None:
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(dim, code), nn.Tanh())
        self.decode = nn.Linear(code, dim)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.encode(c)  # [tasks, K, code]
        error = (c - self.decode(codes)).pow(2).flatten(1).mean(1)  # [tasks]
        return codes.mean(1), error


class ARML(nn.Module):
    """The base learner (an MLP in the batched MAML core) and everything that tailors its initialisation."""

    def __init__(self, settings: ARMLSettings, in_dim: int = 2, out_dim: int = 1) -> None:
        super().__init__()
        self.settings = s = settings
        self.learner = MAML(MLP((in_dim, *s.hidden, out_dim)), "mse", s.inner_lr, first_order=s.first_order)
        d = s.embed_dim
        self.sample_embed = nn.Linear(in_dim + out_dim, d)  # F = E: W_e, b_e
        self.assign = nn.Linear(d, s.prototypes)  # W_p, b_p
        self.relational_parts()

    def relational_parts(self) -> None:
        """The graphs, the aggregators and the gate, for ``self.learner`` (shared with the image classifier of
        :mod:`metaedu.algorithms.arml_images`, which computes its prototypes differently)."""
        s, d = self.settings, self.settings.embed_dim
        self.proto_relation = nn.Linear(d, 1)  # W_r, b_r
        self.vertices = nn.Parameter(torch.randn(s.vertices, d))  # H_G: h^1 .. h^G
        self.vertex_relation = nn.Linear(d, 1)  # W_o, b_o
        self.passing = nn.ModuleList(nn.Linear(d, d) for _ in range(s.mp_layers))  # W^(l), b^(l)
        self.ag_q, self.ag_t = Autoencoder(d, s.code), Autoencoder(d, s.code)
        self.shapes = {n: p.shape for n, p in self.learner.model.named_parameters()}
        self.gate = nn.Linear(2 * s.code, sum(p.numel() for p in self.learner.model.parameters()))  # W_g, b_g

    # 1-2: prototypes and the prototype-based relational graph
    def prototypes(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """C_R ``[tasks, K, d]`` and the assignment P ``[tasks, n, K]`` of support points ``x`` ``[tasks, n, in]``."""
        f = self.sample_embed(torch.cat([x, y], -1))  # F(X): [tasks, n, d]
        p = torch.softmax(self.assign(f), -1)  # P: each point's weights over the K clusters
        return (p.transpose(1, 2) @ f) / p.sum(1)[..., None], p  # c^k = sum_j P[j, k] F(x_j) / sum_j P[j, k]

    def relational_graph(self, c: torch.Tensor) -> torch.Tensor:
        """A_R ``[tasks, K, K]``."""
        return relation(c, c, self.proto_relation, self.settings.gamma_r)

    # 3-5: the meta-knowledge graph, the super-graph and message passing
    def knowledge_graph(self) -> torch.Tensor:
        """A_G ``[G, G]``."""
        return relation(self.vertices, self.vertices, self.vertex_relation, self.settings.gamma_o)

    def super_graph(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A_i ``[tasks, K + G, K + G]``, H_i ``[tasks, K + G, d]`` and A_S ``[tasks, K, G]``."""
        tasks, g = c.shape[0], self.settings.vertices
        a_s = super_graph_similarity(c, self.vertices, self.settings.gamma_s)
        a_g = self.knowledge_graph().expand(tasks, g, g)
        top = torch.cat([self.relational_graph(c), a_s], 2)  # [tasks, K, K + G]
        bottom = torch.cat([a_s.transpose(1, 2), a_g], 2)  # [tasks, G, K + G]
        h = torch.cat([c, self.vertices.expand(tasks, g, -1)], 1)
        return torch.cat([top, bottom], 1), h, a_s

    def propagated(self, c: torch.Tensor) -> torch.Tensor:
        """C^_R: the prototypes after message passing on the super-graph, ``[tasks, K, d]``."""
        a, h, _ = self.super_graph(c)
        for layer in self.passing:
            h = message_passing(a, h, layer)
        return h[:, : c.shape[1]]

    # 6-7: task representations and the modulated initialisation
    def task_representation(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t_i + q_i) ``[tasks, 2 code]`` and the reconstruction loss mu_1 L_t + mu_2 L_q ``[tasks]``."""
        c, _ = self.prototypes(x, y)
        q, loss_q = self.ag_q(c)
        t, loss_t = self.ag_t(self.propagated(c))
        return torch.cat([t, q], -1), self.settings.aux_weight * (loss_t + loss_q)

    def initialisation(self, representation: torch.Tensor) -> Params:
        """theta_0i = sigmoid(W_g (t_i + q_i) + b_g) o theta_0, as ``{name: [tasks, *shape]}``."""
        theta = per_task(parameter_dict(self.learner.model), representation.shape[0])
        if not self.settings.modulate:
            return theta
        gates = torch.sigmoid(self.gate(representation)).split([s.numel() for s in self.shapes.values()], -1)
        return {n: theta[n] * g.view(-1, *self.shapes[n]) for n, g in zip(self.shapes, gates)}

    # 8: adaptation and the meta-objective
    def meta_loss(self, tasks: RegressionTasks, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(objective, mean query loss, mean reconstruction term) of a batch of tasks after ``steps`` inner steps."""
        representation, aux = self.task_representation(tasks.x_support, tasks.y_support)
        start = self.initialisation(representation)
        fast = self.learner.adapt(tasks.x_support, tasks.y_support, steps, start=start)
        query, _ = self.learner.task_losses(fast, tasks.x_query, tasks.y_query)  # [tasks]
        return (query + aux).mean(), query.mean(), aux.mean()

    def predict(self, x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor,
                steps: int) -> torch.Tensor:
        """Query outputs after adapting from theta_0i (no meta-gradient), detached."""
        with torch.no_grad():
            start = self.initialisation(self.task_representation(x_support, y_support)[0])
        with torch.enable_grad():
            fast = self.learner.adapt(x_support, y_support, steps, create_graph=False, start=start)
        with torch.no_grad():
            return batched_forward(self.learner.model, fast, x_query)

    @torch.no_grad()
    def vertex_usage(self, x_support: torch.Tensor, y_support: torch.Tensor) -> torch.Tensor:
        """How much each task's prototypes lean on each meta-knowledge vertex: A_S averaged over prototypes, ``[tasks, G]``."""
        c, _ = self.prototypes(x_support, y_support)
        return super_graph_similarity(c, self.vertices, self.settings.gamma_s).mean(1)


def usage_by_family(usage: torch.Tensor, family: torch.Tensor, n_families: int) -> torch.Tensor:
    """Mean vertex usage of each family's tasks: ``usage`` ``[tasks, G]``, ``family`` ``[tasks]`` -> ``[families, G]``."""
    missing = [f for f in range(n_families) if not bool((family == f).any())]
    if missing:
        raise ValueError(f"no task of families {missing}: draw more tasks to average their vertex usage")
    return torch.stack([usage[family == f].mean(0) for f in range(n_families)])


def separation(usage: torch.Tensor, family: torch.Tensor, n_families: int) -> dict[str, float]:
    """How far the vertex usage tells families apart, three ways:

    * ``gap``: the largest difference between two families' mean weight on one vertex;
    * ``favourites``: how many distinct vertices are some family's most used one;
    * ``decoding``: accuracy (%) of naming a task's family from its usage by the nearest family mean, means taken
      on the even-numbered tasks and scored on the odd ones (chance: 100 / families).
    """
    usage = usage.detach()
    by_family = usage_by_family(usage, family, n_families)
    means = usage_by_family(usage[0::2], family[0::2], n_families)
    guess = torch.cdist(usage[1::2], means).argmin(1)
    return {"gap": float((by_family.max(0).values - by_family.min(0).values).max()),
            "favourites": len(set(by_family.argmax(1).tolist())),
            "decoding": float((guess == family[1::2]).float().mean() * 100), "chance": 100 / n_families}


# ----------------------------------------------------------------------------- building, training, scoring


def build(settings: ARMLSettings, seed: int = 0, in_dim: int = 2) -> ARML:
    """ARML with the initial weights of ``seed``."""
    with seeded(seed):
        return ARML(settings, in_dim)


def maml_baseline(settings: ARMLSettings, seed: int = 0, in_dim: int = 2) -> MAML:
    """The MAML baseline: ARML's base learner (same MLP, alpha, inner steps) without the modulation."""
    with seeded(seed):
        return MAML(MLP((in_dim, *settings.hidden, 1)), "mse", settings.inner_lr, first_order=settings.first_order)


def train_arml(model: ARML, sampler, settings: ARMLSettings, checkpoint: str | Path | bool | None = None,
               progress: bool = True, max_seconds: float | None = None) -> History:
    """Meta-train with Adam on meta-batches from ``sampler`` (``FamilyTasks``, or ``ImageFamilies`` for the image
    classifier); logs the objective, the query loss ("mse" or "cross_entropy") and the reconstruction term. ``checkpoint``: see :func:`metaedu.checkpoints.resolve`."""
    checkpoint = resolve(checkpoint, "arml", settings, model, sampler.generator)
    query_name = "mse" if model.learner.loss == "mse" else "cross_entropy"  # the query loss, logged by its name
    opt = torch.optim.Adam(model.parameters(), lr=settings.outer_lr)

    def step(i: int) -> dict:
        loss, query, aux = model.meta_loss(sampler.sample(settings.meta_batch), settings.inner_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), query_name: query.detach(), "reconstruction": aux.detach()}

    return train(step, settings.steps, state={"model": model, "opt": opt, "sampler": sampler.generator},
                 checkpoint=checkpoint, progress=progress, desc="ARML", max_seconds=max_seconds)


def query_mse(model: ARML | MAML, tasks: RegressionTasks, steps: int) -> torch.Tensor:
    """Each task's query MSE after ``steps`` inner steps, ``[tasks]`` (ARML or the MAML baseline, same tasks:
    a paired comparison)."""
    out = model.predict(tasks.x_support, tasks.y_support, tasks.x_query, steps)
    return task_loss(out, tasks.y_query, "mse").cpu()
