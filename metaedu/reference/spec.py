"""What a reference is (:class:`Spec`) and the pieces the glyph references share: the data's
identity and the fixed test episodes (evaluation alphabets, the sampler seed :data:`EVAL_SEED`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

EVAL_SEED = 20_261_127  # the fixed test episodes: evaluation alphabets, this sampler seed


@dataclass(frozen=True)
class Spec:
    """How one reference is built, trained and scored.

    ``per_episode`` gives one value per fixed test episode (or test function); the record keeps their
    mean and interval as the reference's score. ``extras`` (optional) gives further results the
    lecture draws (curves, other models' scores on the same episodes), stored in the record as JSON.
    """

    name: str
    lecture: str  # the lecture that shows it
    what: str  # one line for people
    settings: Callable[[], object]  # the reference preset (the lecture's full preset, with the steps trained)
    build: Callable[[object, torch.device], torch.nn.Module]  # an untrained model for these settings
    train: Callable[..., object]  # (model, settings, device, seed, max_seconds) -> steps done, or the settings as
    #   trained (a stage-by-stage budget); trains in place
    per_episode: Callable[[torch.nn.Module, object, torch.device, int], torch.Tensor]  # score per test episode
    n_way: int = 0  # the test episodes' shape (0 where the test is not N-way K-shot)
    k_shot: int = 0
    n_query: int = 5
    episodes: int = 400  # fixed test episodes behind the recorded score
    unit: str = "%"  # the score's unit
    higher_is_better: bool = True
    test: str = ""  # what the score measures, where n_way/k_shot do not say it (one line)
    data: Callable[[], dict] = field(default=None)  # the data's identity (default: the glyphs')
    extras: Callable[[torch.nn.Module, object, torch.device], dict] | None = None
    check_episodes: int = 0  # how many of the first fixed episodes CI re-scores (0: all; the first n must not
    #   depend on how many are drawn)
    steps_field: str | tuple[str, ...] = "steps"  # the settings field(s) counting training steps (set to the steps done)


def glyphs():
    from metaedu.data.glyphs import load_glyphs

    return load_glyphs()


def glyph_identity() -> dict:
    from metaedu.data.glyphs import DATA_VERSION

    return {"data": "glyphs", "version": DATA_VERSION, "seed": 0, "train_split": "background",
            "test_split": "evaluation"}


def test_sampler(spec: Spec, device):
    """The fixed test episodes of a glyph reference: evaluation alphabets, seed :data:`EVAL_SEED`."""
    from metaedu.tasks.episodes import EpisodeSampler

    return EpisodeSampler(glyphs().split("evaluation"), spec.n_way, spec.k_shot, spec.n_query, device=device,
                          seed=EVAL_SEED)
