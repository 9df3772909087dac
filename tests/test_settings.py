"""Every method's settings: distinct names, both presets valid, impossible values refused by name."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import pytest

import metaedu.algorithms
import metaedu.rl
from metaedu.runtime import preset


def settings_classes() -> list[type]:
    """Every dataclass with quick() and full() presets in the algorithm modules (and meta-RL's)."""
    found = {}
    modules = [*pkgutil.walk_packages(metaedu.algorithms.__path__, prefix="metaedu.algorithms."),
               *pkgutil.walk_packages(metaedu.rl.__path__, prefix="metaedu.rl.")]
    for info in modules:
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and value.__module__ == info.name
                and hasattr(value, "quick")
                and hasattr(value, "full")
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[k] for k in sorted(found)]


CLASSES = settings_classes()

#: One impossible value per class, and the field the message must name.
BAD = {
    "ProtoNetSettings": {"distance": "manhattan"},
    "CactusSettings": {"embedding": "pca"},
    "ZeroShotSettings": {"lr": 0.0},
    "MatchingSettings": {"read_steps": 0},
    "SiameseSettings": {"pair_classes": 1},
    "TransferSettings": {"epochs": 0},
    "MANNSettings": {"gamma": 1.5},
    "MetaLSTMSettings": {"eval_query": 0},
    "BaselineSettings": {"val_fraction": 1.0},
    "LearnedOptimizerSettings": {"unroll": 30},
    "SinusoidSettings": {"inner_lr": -0.01},
    "GlyphSettings": {"n_way": 0},
    "TwentyWayGlyphSettings": {"meta_batch": 0},
    "LLAMASinusoidSettings": {"noise_std": 0.0},
    "LLAMAGlyphSettings": {"prior_precision": -1.0},
    "LinesOrSinesSettings": {"kl_weight": -0.1},
    "AmbiguousGlyphSettings": {"encoder": "pixels"},
    "GrBALSettings": {"past": 0},
    "MAMLRLSettings": {"episodes": 1},
    "CuriositySettings": {"lr": 0.0},
    "GNNSettings": {"unlabelled": "ignore"},
    "TwentyWayGNNSettings": {"labelled_shots": 2},
    "SemiSupervisedGNNSettings": {"choice": "best"},
    "ARMLSettings": {"vertices": 0},
    "ARMLImageSettings": {"n_way": 1},
    "MemorizationPoseSettings": {"beta": -1.0},
    "MemorizationClassificationSettings": {"regularizer": "dropout"},
    "MemorizationSinusoidSettings": {"inner_lr": -0.01},
}


def test_every_settings_class_is_found_and_has_a_distinct_name():
    names = [cls.__name__ for cls in CLASSES]
    assert len(names) == len(set(names)), f"settings classes share a name: {sorted(names)}"
    assert set(names) == set(BAD), "a settings class was added or renamed: give it an entry in BAD"
    assert "Settings" not in names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("mode", ["quick", "full"])
def test_presets_are_valid_and_validated(cls, mode):
    assert hasattr(cls, "__post_init__"), f"{cls.__name__} validates nothing (no __post_init__)"
    settings = preset(cls, mode)
    assert type(settings) is cls
    field, value = next(iter(BAD[cls.__name__].items()))
    with pytest.raises(ValueError, match=f"{cls.__name__}.{field}|{field}"):
        preset(cls, mode, **{field: value})


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_unknown_modes_and_fields_are_errors(cls):
    with pytest.raises(ValueError, match="MODE"):
        preset(cls, "Full")
    with pytest.raises(TypeError, match="no field"):
        preset(cls, "quick", not_a_field=1)


def test_twenty_way_glyph_settings_are_the_papers_in_full_mode():
    from metaedu.algorithms.maml import GlyphSettings, TwentyWayGlyphSettings

    full = preset(TwentyWayGlyphSettings, "full")
    assert (full.n_way, full.inner_lr, full.inner_steps, full.test_inner_steps, full.meta_batch) == (20, 0.1, 5, 5, 16)
    assert GlyphSettings.twenty_way("quick") == preset(TwentyWayGlyphSettings, "quick")
    with pytest.raises(ValueError, match="MODE"):
        GlyphSettings.twenty_way("fulll")  # was quick mode, silently


def test_the_mann_encoder_follows_the_mode():
    from metaedu.algorithms.mann import MANNSettings
    from metaedu.algorithms.transfer import TransferSettings

    # quick mode's encoder is a small, short classifier (lecture 00's quick classifier is chosen separately,
    # on lecture 00's validation alphabets); full mode's is the full-size one of TransferSettings.full()
    quick, full = preset(MANNSettings, "quick"), preset(MANNSettings, "full")
    assert quick.encoder_hidden < full.encoder_hidden == TransferSettings.full().hidden
    assert quick.encoder_epochs <= full.encoder_epochs
