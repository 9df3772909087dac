"""ARML for few-shot image classification (Yao et al. 2020, the Plain-Multi and Art-Multi experiments).

Everything after the prototypes is :class:`~metaedu.algorithms.arml.ARML`: the prototype-based relational
graph A_R, the meta-knowledge graph (G vertices, A_G), the super-graph with A_S, message passing, the two
autoencoder aggregators (q_i, t_i, L_q, L_t) and the gate theta_0i = sigmoid(W_g (t_i + q_i) + b_g) o theta_0.
What changes for classes:

* **Prototypes** are class means of the embedded support set, c^k = (1 / N_k) sum_{j: y_j = k} E(x_j)
  (the paper's eq. 2, as in a Prototypical Network), so a task has K = N (``n_way``) prototypes. E is its
  own small Conv4 (``embed_hidden`` filters) followed by a linear map to d = ``embed_dim``; each task's
  images pass through it with that task's batch statistics only (the batched forward of
  :mod:`metaedu.nn.functional`), so no task's prototypes depend on another task of the meta-batch.
* **The base learner** is lecture 06's: a Conv4 with an N-way head in the batched MAML core, with the
  cross-entropy loss, adapted from theta_0i.

With ``modulate=False`` and ``aux_weight=0`` the objective is MAML's on the same Conv4 and its
meta-gradient on theta_0 is MAML's (``tests/test_arml_images.py`` checks it against the batched core and
the slow per-task loop). Symbols -> names: as in :mod:`metaedu.algorithms.arml`; N = ``n_way``,
K-shot = ``k_shot``; mu_1 = mu_2 = ``aux_weight``; G = ``vertices``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.algorithms.arml import ARML
from metaedu.algorithms.maml import MAML
from metaedu.nn.backbones import Conv4
from metaedu.nn.functional import batched_forward, parameter_dict, per_task
from metaedu.runtime import check_settings, seeded


@dataclass
class ARMLImageSettings:
    """ARML (and the MAML baseline beside it) on N-way K-shot episodes of mixed image families."""

    n_way: int = 5  # classes per episode (N; also the number of prototypes K)
    k_shot: int = 1  # support images per class
    n_query: int = 15  # query images per class for the meta-update
    hidden: int = 32  # filters per Conv4 block of the base learner (the authors' Plain-Multi script: 32)
    embed_hidden: int = 32  # filters per Conv4 block of the prototype encoder E
    inner_lr: float = 0.01  # alpha (the authors' script: 0.01)
    inner_steps: int = 5  # inner steps while meta-training (the authors' script: 5)
    test_inner_steps: int = 5  # inner steps when adapting to a test episode
    first_order: bool = False  # drop second derivatives in the meta-gradient
    outer_lr: float = 0.001  # beta, Adam's step size
    meta_batch: int = 4  # episodes per meta-update (the authors' script: 4)
    steps: int = 50000  # meta-updates (the authors' script: 50,000)
    embed_dim: int = 128  # d: width of the prototypes and of the graphs' node features (the script's hidden_dim)
    vertices: int = 16  # G: vertices of the meta-knowledge graph (the script: 16)
    code: int = 128  # width of the task representations q_i and t_i
    mp_layers: int = 2  # message-passing layers on the super-graph
    gamma_r: float = 1.0  # gamma_r: scale of prototype differences in A_R
    gamma_o: float = 1.0  # gamma_o: scale of vertex differences in A_G
    gamma_s: float = 2.0**0.5  # gamma_s: scale in A_S
    aux_weight: float = 0.01  # mu_1 = mu_2: weight of the reconstruction losses (the script: 0.01)
    modulate: bool = True  # gate theta_0 per task (False: theta_0i = theta_0)
    eval_episodes: int = 600  # test episodes behind each reported accuracy
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @property
    def prototypes(self) -> int:
        """K: one prototype per class."""
        return self.n_way

    @classmethod
    def quick(cls) -> "ARMLImageSettings":
        """A laptop CPU: narrow Conv4s (8 filters), one inner step of a larger alpha, a few dozen meta-updates. Not tuned
        beyond running: it shows the method and its control in seconds, not the paper's accuracy."""
        return cls(hidden=8, embed_hidden=8, embed_dim=16, code=16, vertices=4, n_query=5, inner_lr=0.4,
                   inner_steps=1, test_inner_steps=3, meta_batch=4, steps=60, outer_lr=0.005, eval_episodes=100)

    @classmethod
    def full(cls) -> "ARMLImageSettings":
        """Yao et al.'s Plain-Multi 5-way 1-shot script: Conv4-32, 5 inner steps of 0.01, 50,000 meta-updates of 4."""
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("n_way", "k_shot", "n_query", "hidden", "embed_hidden", "inner_lr", "outer_lr",
                                       "meta_batch", "steps", "embed_dim", "vertices", "code", "gamma_r", "gamma_o",
                                       "gamma_s", "eval_episodes"),
                       non_negative=("inner_steps", "test_inner_steps", "mp_layers", "aux_weight"))
        if self.n_way < 2:
            raise ValueError(f"ARMLImageSettings.n_way must be at least 2 (a prototype graph needs two classes), "
                             f"got {self.n_way}")


def base_learner(settings: ARMLImageSettings, in_channels: int = 1, image_size: int = 28) -> MAML:
    """Lecture 06's learner: Conv4 (batch statistics only) with an N-way head in the MAML core."""
    model = Conv4(in_channels, settings.hidden, settings.n_way, track_running_stats=False, image_size=image_size)
    return MAML(model, "cross_entropy", settings.inner_lr, first_order=settings.first_order)


class ARMLClassifier(ARML):
    """ARML whose prototypes are class means of embedded images (the rest is :class:`ARML`'s)."""

    def __init__(self, settings: ARMLImageSettings, in_channels: int = 1, image_size: int = 28) -> None:
        nn.Module.__init__(self)
        self.settings = s = settings
        self.learner = base_learner(s, in_channels, image_size)
        self.encoder = Conv4(in_channels, s.embed_hidden, track_running_stats=False, image_size=image_size)  # E
        self.project = nn.Linear(self.encoder.out_dim, s.embed_dim)
        self.relational_parts()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): ``[tasks, n, C, H, W]`` -> ``[tasks, n, d]``, each task with its own batch statistics."""
        z = batched_forward(self.encoder, per_task(parameter_dict(self.encoder), x.shape[0]), x)
        return self.project(z)

    def prototypes(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """C_R ``[tasks, N, d]`` (class means of the embedded support set) and the one-hot labels ``[tasks, n, N]``."""
        onehot = F.one_hot(y, self.settings.n_way).to(x.dtype)  # plays P's part: each image to its class
        counts = onehot.sum(1)[..., None]  # [tasks, N, 1]
        if bool((counts == 0).any()):
            raise ValueError("every class of an episode needs at least one support image to have a prototype")
        return (onehot.transpose(1, 2) @ self.embed(x)) / counts, onehot


def build(settings: ARMLImageSettings, seed: int = 0, in_channels: int = 1, image_size: int = 28) -> ARMLClassifier:
    """ARML for images with the initial weights of ``seed``."""
    with seeded(seed):
        return ARMLClassifier(settings, in_channels, image_size)


def maml_baseline(settings: ARMLImageSettings, seed: int = 0, in_channels: int = 1, image_size: int = 28,
                  scale: float = 1.0) -> MAML:
    """The MAML baseline: ARML's base learner (same Conv4, alpha, inner steps) without the modulation.

    ``scale`` multiplies its initial weights: ``scale=0.5`` starts MAML where ARML starts before training, since
    an untrained gate sigmoid(W_g (t + q) + b_g) is close to 1/2 everywhere (a control: does ARML gain from the
    per-task gate, or from starting at theta_0 / 2?).
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    with seeded(seed):
        learner = base_learner(settings, in_channels, image_size)
    with torch.no_grad():
        for p in learner.model.parameters():
            p.mul_(scale)
    return learner


def fixed_episodes(sampler, n_episodes: int, batch: int = 25) -> list:
    """``n_episodes`` test episodes drawn once, in batches, so that several methods are scored on the same ones."""
    if n_episodes < 1 or batch < 1:
        raise ValueError(f"n_episodes and batch must be at least 1, got {n_episodes} and {batch}")
    return [sampler.sample(min(batch, n_episodes - start)) for start in range(0, n_episodes, batch)]


def accuracies(model: ARMLClassifier | MAML, episodes: list, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query accuracy (%) of each episode after ``steps`` inner steps, ``[n]``, and each episode's family ``[n]``."""
    acc, family = [], []
    for eps in episodes:
        out = model.predict(eps.x_support, eps.y_support, eps.x_query, steps)  # [tasks, n_query_total, N]
        acc.append((out.argmax(-1) == eps.y_query).float().mean(1).cpu() * 100)
        family.append(eps.family.cpu())
    return torch.cat(acc), torch.cat(family)
