"""The glyph references of lectures 03 and 06: Snell et al.'s ProtoNet and Finn et al.'s MAML presets."""

from __future__ import annotations

import dataclasses

import torch

from metaedu.reference.spec import EVAL_SEED, Spec, glyphs, test_sampler


def _maml_settings(cls_name: str, steps: int):
    def make():
        from metaedu.algorithms import maml
        from metaedu.runtime import preset

        return preset(getattr(maml, cls_name), "full", steps=steps, checkpoint=False)

    return make


def _maml_build(settings, device):
    from metaedu.algorithms import maml
    from metaedu.runtime import seeded

    with seeded(0):
        return maml.glyph_learner(settings, device=device)


def _maml_train(learner, settings, device, seed, max_seconds=None) -> int:
    from metaedu.algorithms import maml
    from metaedu.tasks.episodes import EpisodeSampler

    sampler = EpisodeSampler(glyphs().split("background"), settings.n_way, settings.k_shot, settings.n_query,
                             device=device, seed=seed)
    return maml.meta_train(learner, sampler, settings, checkpoint=False, max_seconds=max_seconds).steps_done


def _maml_per_episode(spec_name: str):
    def per_episode(learner, settings, device, episodes) -> torch.Tensor:
        from metaedu.evaluation import episode_accuracies

        sampler = test_sampler(BY_NAME[spec_name], device)
        steps = settings.test_inner_steps
        return episode_accuracies(lambda e: learner.predict(e.x_support, e.y_support, e.x_query, steps), sampler,
                                  episodes, batch=25)

    return per_episode


def _protonet_settings(steps: int):
    def make():
        from metaedu.algorithms import protonet
        from metaedu.runtime import preset

        return preset(protonet.ProtoNetSettings, "full", steps=steps, checkpoint=False)

    return make


def _protonet_build(settings, device):
    from metaedu.algorithms import protonet
    from metaedu.runtime import seeded

    with seeded(0):
        return protonet.ProtoNet(settings, 1, 28).to(device)


def _protonet_train(model, settings, device, seed, max_seconds=None) -> int:
    from metaedu.algorithms import protonet

    _, history = protonet.train_protonet(settings, glyphs().split("background"), device, seed, checkpoint=False,
                                         progress=True, model=model, max_seconds=max_seconds)
    return history.steps_done


def _protonet_per_episode(model, settings, device, episodes) -> torch.Tensor:
    from metaedu.algorithms import metric
    from metaedu.evaluation import episode_accuracies

    sampler = test_sampler(BY_NAME["protonet-20way"], device)
    return episode_accuracies(lambda e: metric.predict(model, e), sampler, episodes, batch=25)


def _episodes(n_way: int, k_shot: int, device):
    """Further fixed test episodes (evaluation alphabets, the references' sampler seed): the same for every reference."""
    from metaedu.tasks.episodes import EpisodeSampler

    return EpisodeSampler(glyphs().split("evaluation"), n_way, k_shot, 5, device=device, seed=EVAL_SEED)


def _extras(predict_for, settings_list):
    """Extras: accuracy (%) per episode on further settings ``(n_way, k_shot, episodes)`` (other lectures pair with them)."""
    def extras(model, settings, device) -> dict:
        from metaedu.evaluation import episode_accuracies

        out = {}
        for n_way, k_shot, episodes in settings_list:
            values = episode_accuracies(predict_for(model, settings), _episodes(n_way, k_shot, device), episodes,
                                        batch=25)
            out[f"{n_way}-way {k_shot}-shot"] = [round(float(v), 4) for v in values]
        return {"per_episode": out}

    return extras


def _maml_predict(learner, settings):
    return lambda e: learner.predict(e.x_support, e.y_support, e.x_query, settings.test_inner_steps)


#: Test-time inner steps beside the preset's. Finn et al.'s text adapts 20-way test tasks with 5 steps (the
#: preset's, and the recorded score's); the authors' released code adapts every Omniglot test task with 10.
RELEASED_CODE_TEST_STEPS = 10


def _with_test_steps(spec_name: str, extras, steps: tuple[int, ...]):
    """``extras`` plus the accuracy per fixed test episode (the recorded score's episodes) after each of ``steps``
    test-time inner steps, under ``"test_steps"``."""
    def both(learner, settings, device) -> dict:
        out = extras(learner, settings, device)
        per_episode = _maml_per_episode(spec_name)
        out["test_steps"] = {
            str(n): [round(float(v), 4) for v in per_episode(learner, dataclasses.replace(settings, test_inner_steps=n),
                                                             device, BY_NAME[spec_name].episodes)]
            for n in steps}
        return out

    return both


def _protonet_predict(model, settings):
    from metaedu.algorithms import metric

    return lambda e: metric.predict(model, e)


BY_NAME: dict[str, Spec] = {
    "protonet-20way": Spec(
        "protonet-20way", "03", "Prototypical Network, Snell et al.'s Omniglot preset (60-way training episodes, "
        "rotations, Conv4-64), scored on 20-way 1-shot glyph episodes",
        _protonet_settings(20_000), _protonet_build, _protonet_train, _protonet_per_episode, 20, 1, episodes=200, check_episodes=50,
        extras=_extras(_protonet_predict, ((5, 1, 400), (5, 5, 400), (20, 5, 200)))),
    "maml-5way": Spec(
        "maml-5way", "06", "MAML, Finn et al.'s 5-way 1-shot Omniglot preset (Conv4-64, 32 tasks, second order)",
        _maml_settings("GlyphSettings", 20_000), _maml_build, _maml_train, _maml_per_episode("maml-5way"), 5, 1, check_episodes=50,
        extras=_extras(_maml_predict, ((5, 5, 400),))),
    "maml-20way": Spec(
        "maml-20way", "06", "MAML, Finn et al.'s 20-way 1-shot Omniglot preset (Conv4-64, 16 tasks, 5 inner steps, "
        "second order)",
        _maml_settings("TwentyWayGlyphSettings", 10_000), _maml_build, _maml_train, _maml_per_episode("maml-20way"),
        20, 1, episodes=200, check_episodes=50,
        extras=_with_test_steps("maml-20way", _extras(_maml_predict, ((20, 5, 200),)), (RELEASED_CODE_TEST_STEPS,))),
}
SPECS = tuple(BY_NAME.values())
