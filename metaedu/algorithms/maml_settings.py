"""Settings of MAML's experiments (Finn, Abbeel & Levine 2017): sinusoid regression and glyph episodes.

Each class has ``quick()`` (a laptop CPU, lecture time) and ``full()`` (the paper's setting, for a
GPU, checkpointed) presets and rejects impossible values when built. :mod:`metaedu.algorithms.maml`
re-exports them, so ``maml.GlyphSettings`` is the name the lectures use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metaedu.algorithms.maml_plan import parse_plan
from metaedu.runtime import check_settings, preset


@dataclass
class SinusoidSettings:
    """MAML on Finn et al.'s sinusoids (section 5.1): MLP 1-40-40-1, K = 10."""

    k_shot: int = 10  # K support points per task
    n_query: int = 10  # query points per task for the meta-update
    hidden: tuple[int, ...] = (40, 40)  # hidden layer sizes of the MLP
    inner_lr: float = 0.01  # alpha
    outer_lr: float = 0.001  # beta, Adam's step size
    inner_steps: int = 1  # gradient steps in the inner loop while meta-training
    test_inner_steps: int = 10  # gradient steps when adapting to a test task
    first_order: bool = False  # drop second derivatives (first-order MAML)
    meta_sgd: bool = False  # learn a per-parameter alpha (Meta-SGD)
    anil: bool = False  # adapt only the last layer (ANIL)
    meta_batch: int = 25  # tasks per meta-update
    steps: int = 70000  # meta-updates
    pretrain_steps: int = 70000  # updates of the jointly trained (pretrained) baseline
    eval_tasks: int = 600  # test tasks behind each reported MSE
    plan: str = field(default="auto", metadata={"fingerprint": False})  # "auto" (measured, cached), "loop", "all", ...
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "SinusoidSettings":
        return cls(steps=1500, pretrain_steps=1000, outer_lr=0.003, eval_tasks=300)

    @classmethod
    def full(cls) -> "SinusoidSettings":
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("k_shot", "n_query", "hidden", "inner_lr", "outer_lr", "meta_batch", "steps",
                                       "pretrain_steps", "eval_tasks"),
                       non_negative=("inner_steps", "test_inner_steps"))
        parse_plan(self.plan)  # a ValueError naming the problem


@dataclass
class GlyphSettings:
    """MAML on N-way K-shot glyph episodes with Conv4 (the paper's Omniglot setting in full mode)."""

    n_way: int = 5  # classes per episode
    k_shot: int = 1  # support images per class
    n_query: int = 15  # query images per class for the meta-update
    hidden: int = 64  # filters per Conv4 block
    inner_lr: float = 0.4  # alpha (0.4 for 5-way in the paper, 0.1 for 20-way)
    outer_lr: float = 0.001  # beta, Adam's step size
    inner_steps: int = 1  # inner steps while meta-training (1 for 5-way, 5 for 20-way)
    test_inner_steps: int = 3  # inner steps at test time (3 for 5-way, 5 for 20-way)
    first_order: bool = False  # first-order MAML
    meta_sgd: bool = False  # Meta-SGD
    anil: bool = False  # ANIL
    meta_batch: int = 32  # episodes per meta-update (32 for 5-way, 16 for 20-way)
    steps: int = 60000  # meta-updates
    eval_episodes: int = 600  # test episodes behind each reported accuracy
    plan: str = field(default="auto", metadata={"fingerprint": False})  # "auto" (measured, cached) or e.g. "2/contiguous/unfold"
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "GlyphSettings":
        """A laptop CPU: 16 filters, 300 meta-updates of 4 episodes (on meta-validation alphabets as accurate
        as 200 updates of 8 episodes, at about half the CPU time)."""
        return cls(hidden=16, n_query=5, meta_batch=4, steps=300, outer_lr=0.005, eval_episodes=200)

    @classmethod
    def full(cls) -> "GlyphSettings":
        return cls(checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("n_way", "k_shot", "n_query", "hidden", "inner_lr", "outer_lr", "meta_batch",
                                       "steps", "eval_episodes"),
                       non_negative=("inner_steps", "test_inner_steps"))
        parse_plan(self.plan)  # a ValueError naming the problem

    @classmethod
    def twenty_way(cls, mode: str) -> "TwentyWayGlyphSettings":
        """``preset(TwentyWayGlyphSettings, mode)``, the name lecture 06 still uses; drop it once the lecture
        calls ``preset`` (an unknown mode is an error, as there)."""
        return preset(TwentyWayGlyphSettings, mode)


@dataclass
class TwentyWayGlyphSettings(GlyphSettings):
    """MAML on 20-way glyph episodes: the paper's 20-way Omniglot setting in full mode."""

    n_way: int = 20  # classes per episode
    inner_lr: float = 0.1  # alpha (0.1 for 20-way in the paper)
    inner_steps: int = 5  # inner steps while meta-training (5 for 20-way)
    test_inner_steps: int = 5  # inner steps at test time (5 for 20-way)
    meta_batch: int = 16  # episodes per meta-update (16 for 20-way)

    @classmethod
    def quick(cls) -> "TwentyWayGlyphSettings":
        """Scaled down for a laptop CPU: narrow Conv4, 2 queries per class, one inner step in training, 40 test
        episodes (lecture time; lecture 06 compares them with pixel nearest neighbour on the same episodes)."""
        return cls(hidden=16, n_query=2, inner_steps=1, meta_batch=4, steps=80, outer_lr=0.005, eval_episodes=40)

    @classmethod
    def full(cls) -> "TwentyWayGlyphSettings":
        return cls(checkpoint=True)
