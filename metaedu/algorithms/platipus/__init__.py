"""PLATIPUS: probabilistic model-agnostic meta-learning (Finn, Xu & Levine, NeurIPS 2018).

MAML gives one model per task; when a few examples fit several functions it still
gives one. PLATIPUS keeps MAML's inner loop but starts it from a *sampled* theta, so
every draw is a different plausible model. Read next to the paper (section 4,
algorithms 1 and 2):

1. A Gaussian over the initial weights, ``p(theta) = N(mu_theta, sigma2_theta)``
   (diagonal), made task-dependent by one gradient step on the training set
   ("additional dependencies", eq. 4)::

       p(theta | D_tr)   = N(mu_theta - gamma_p * grad_mu L(mu_theta, D_tr),   sigma2_theta)

2. Meta-training (algorithm 1) uses an inference network that may look at the test
   set, one gradient step as well::

       q(theta | D_test) = N(mu_theta - gamma_q * grad_mu L(mu_theta, D_test), v_q)

   draws ``theta ~ q`` by reparameterisation, adapts it on the training set with
   MAML's step ``phi = theta - alpha * grad_theta L(theta, D_tr)``, and minimises
   ``L(phi, D_test) + kl_weight * KL(q(theta | D_test) || p(theta | D_tr))``
   over Theta = {mu_theta, sigma2_theta, v_q, gamma_p, gamma_q} with Adam. The KL
   term is the part of the lower bound (slide "hybrid inference") that ties the
   prior, which sees only D_tr, to the posterior, which saw the answers.
3. Meta-testing (algorithm 2): draw ``theta ~ p(theta | D_tr)``, adapt it with the
   same gradient steps, and repeat for as many models as wanted.

Symbols and names: mu_theta = the network's own parameters (``learner.maml.model``);
sigma2_theta = ``exp(log_sigma2)``; v_q = ``exp(log_v_q)``; gamma_p, gamma_q =
``gamma_p``, ``gamma_q`` (one learned step size per weight, like Meta-SGD's alpha);
alpha = ``inner_lr``; the KL weight = ``kl_weight``. Weights of many tasks and many
samples are dicts ``{name: [samples * tasks, *shape]}`` (sample-major: row
``s * tasks + t`` is sample ``s`` of task ``t``), so every task and every sample of a
meta-batch goes through the network in one batched pass of the MAML core
(:meth:`metaedu.algorithms.maml.MAML.adapt` with ``start=``).

The baselines of the paper's table run on the same core: **MAML** (one model, the
same network and inner loop) and **MAML + noise** (:func:`noisy_maml_models`: MAML's
theta with Gaussian noise added before adapting).

Ambiguous glyph tasks and their scores (coverage, accuracy, NLL) are in
:mod:`metaedu.tasks.ambiguous`, lines-or-sines tasks in :mod:`metaedu.tasks.regression` and
:mod:`metaedu.tasks.ambiguous_regression`.

The package: :mod:`~metaedu.algorithms.platipus.core` (the settings of the regression experiment, the
learner, MAML + noise, meta-training), :mod:`~metaedu.algorithms.platipus.regression` (sampled functions
on lines or sines, active learning), :mod:`~metaedu.algorithms.platipus.glyphs` (ambiguous glyph
classification: settings, quick mode's attribute encoder, coverage, accuracy and NLL of any method) and
:mod:`~metaedu.algorithms.platipus.reference` (the shipped lines-or-sines checkpoint).
"""

from metaedu.algorithms.platipus.core import (
    PLATIPUS,
    LinesOrSinesSettings,
    forward_samples,
    meta_train,
    noisy_maml_models,
    regression_learner,
    regression_network,
    sample_with_kl,
)
from metaedu.algorithms.platipus.glyphs import (
    AmbiguousGlyphData,
    AmbiguousGlyphSettings,
    attribute_encoder,
    choose_noise,
    evaluate_ambiguous,
    feature_extractor,
    glyph_learner,
    glyph_network,
    nearest_prototype,
    prepare_glyphs,
)
from metaedu.algorithms.platipus.regression import active_learning_curves, both_kinds, kinds_of_samples

__all__ = [
    "PLATIPUS",
    "LinesOrSinesSettings",
    "forward_samples",
    "meta_train",
    "noisy_maml_models",
    "regression_learner",
    "regression_network",
    "sample_with_kl",
    "AmbiguousGlyphData",
    "AmbiguousGlyphSettings",
    "attribute_encoder",
    "choose_noise",
    "evaluate_ambiguous",
    "feature_extractor",
    "glyph_learner",
    "glyph_network",
    "nearest_prototype",
    "prepare_glyphs",
    "active_learning_curves",
    "both_kinds",
    "kinds_of_samples",
]
