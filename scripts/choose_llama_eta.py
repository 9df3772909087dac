"""Choose LLAMA's quick-mode eta (the weight of log det H_hat) on meta-validation data only.

Sinusoids: LLAMA is trained with each candidate eta on the quick budget; its predictive (sigma, tau) is
chosen on one set of validation tasks and scored on a second set (held-out log-likelihood per point,
summed over K = 5 and K = 10). Neither set shares a seed with lecture 07's validation (200 + K) or test
(300 + K) tasks. Glyphs: 5-way 1-shot accuracy on episodes from held-out *background* alphabets
(``baselines.validation_split``), never the evaluation alphabets. The stored choice,
``metaedu.algorithms.llama.QUICK_ETA`` (what the quick presets read), must equal what this prints;
``tests/test_hierarchical_bayes.py`` (marker slow) runs :func:`choose` and fails when it does not.
About 80 s of CPU::

    METAEDU_THREADS=1 python scripts/choose_llama_eta.py
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from metaedu import evaluation
from metaedu.algorithms import llama, maml
from metaedu.algorithms.baselines import validation_split
from metaedu.data.glyphs import load_glyphs
from metaedu.evaluation import Score, episode_accuracies, mean_ci
from metaedu.runtime import preset, set_threads
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.tasks.regression import SinusoidTasks

CANDIDATES = (0.0, 1e-3, 1e-2)


@dataclass
class Sweep:
    """Validation scores of every candidate eta (higher is better) and the choice."""

    scores: dict[float, list[Score]] = field(default_factory=dict)  # eta -> one score per validation setting

    @property
    def chosen(self) -> float:
        return max(self.scores, key=lambda eta: sum(s.mean for s in self.scores[eta]))


def sinusoids(candidates=CANDIDATES, seed: int = 0) -> Sweep:
    sweep = Sweep()
    for eta in candidates:
        settings = preset(llama.LLAMASinusoidSettings, "quick", eta=eta)
        learner = llama.sinusoid_learner(settings, seed=seed)
        maml.meta_train(
            learner, SinusoidTasks(settings.k_shot, settings.n_query, seed=seed + 1), settings, progress=False
        )
        sweep.scores[eta] = []
        for K in settings.test_shots:
            choose_on = SinusoidTasks(K, settings.test_points, seed=seed + 500 + K).sample(settings.val_tasks)
            score_on = SinusoidTasks(K, settings.test_points, seed=seed + 600 + K).sample(settings.val_tasks)
            sigma, tau, _ = llama.choose_laplace(
                learner,
                choose_on,
                settings.test_inner_steps,
                list(settings.noise_grid),
                list(settings.tau_grid),
                settings.val_samples,
                seed=seed,
            )
            out = learner.predictive_samples(
                score_on.x_support,
                score_on.y_support,
                score_on.x_query,
                settings.test_inner_steps,
                settings.n_samples,
                torch.Generator().manual_seed(seed),
                sigma,
                tau,
            )
            ll = evaluation.predictive_log_likelihood(out, score_on.y_query, sigma)
            sweep.scores[eta].append(mean_ci(ll, unit="nats"))
    return sweep


def glyphs(candidates=CANDIDATES, seed: int = 0) -> Sweep:
    sweep = Sweep()
    train, validation = validation_split(load_glyphs().split("background"), seed=seed)
    for eta in candidates:
        settings = preset(llama.LLAMAGlyphSettings, "quick", eta=eta)
        learner = llama.glyph_learner(settings, seed=seed)
        episodes = EpisodeSampler(train, settings.n_way, settings.k_shot, settings.n_query, seed=seed)
        maml.meta_train(learner, episodes, settings, progress=False)
        test = EpisodeSampler(validation, settings.n_way, settings.k_shot, settings.test_query, seed=seed + 11)
        acc = episode_accuracies(
            lambda e: learner.predict(e.x_support, e.y_support, e.x_query, settings.test_inner_steps),
            test,
            settings.eval_episodes,
            25,
        )
        sweep.scores[eta] = [mean_ci(acc)]
    return sweep


def choose(seed: int = 0) -> dict[str, Sweep]:
    """Both sweeps; ``{family: sweep.chosen}`` is the form of ``llama.QUICK_ETA``."""
    return {"sinusoids": sinusoids(seed=seed), "glyphs": glyphs(seed=seed)}


def main() -> None:
    set_threads()
    sweeps = choose()
    for family, sweep in sweeps.items():
        for eta, scores in sweep.scores.items():
            print(f"{family:9s} eta = {eta:<6g} " + "   ".join(str(s) for s in scores))
    chosen = {family: sweep.chosen for family, sweep in sweeps.items()}
    print(f"QUICK_ETA = {chosen}")
    print(
        "the stored choice agrees" if chosen == llama.QUICK_ETA else f"the stored {llama.QUICK_ETA} differs: update it"
    )


if __name__ == "__main__":
    main()
