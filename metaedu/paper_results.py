"""The papers' headline figures, as the lecture slides give them: the one place they are written.

Notebooks, tables and the README read them from here. Keys are
``(method, data set, setting)``; values are the text printed beside our own
score (accuracy in %, or MSE).
"""

from __future__ import annotations

PAPER: dict[tuple[str, str, str], str] = {
    # Lake et al. 2015 / Koch et al. 2015: Omniglot 20-way one-shot (Lake's runs)
    ("Humans", "Omniglot", "20-way 1-shot"): "95.5",
    ("Hierarchical Bayesian Program Learning", "Omniglot", "20-way 1-shot"): "95.2",
    ("Affine model", "Omniglot", "20-way 1-shot"): "81.8",
    ("Hierarchical Deep", "Omniglot", "20-way 1-shot"): "65.2",
    ("Deep Boltzmann Machine", "Omniglot", "20-way 1-shot"): "62.0",
    ("Simple Stroke", "Omniglot", "20-way 1-shot"): "35.2",
    ("1-nearest neighbour (pixels)", "Omniglot", "20-way 1-shot"): "21.7",
    ("Siamese Neural Net", "Omniglot", "20-way 1-shot"): "58.3",
    ("Convolutional Siamese Net", "Omniglot", "20-way 1-shot"): "92.0",
    # Vinyals et al. 2016: pixel baseline on Omniglot
    ("1-nearest neighbour (pixels)", "Omniglot", "5-way 1-shot"): "41.7",
    ("1-nearest neighbour (pixels)", "Omniglot", "5-way 5-shot"): "63.2",
    ("1-nearest neighbour (pixels)", "Omniglot", "20-way 5-shot"): "42.6",
    ("1-nearest neighbour (pixels, Vinyals)", "Omniglot", "20-way 1-shot"): "26.7",
    # Koch et al. 2015: MNIST one-shot
    ("1-nearest neighbour (pixels)", "MNIST", "10-way 1-shot"): "26.5",
    ("Convolutional Siamese Net", "MNIST", "10-way 1-shot"): "70.3",
    # Snell et al. 2017
    ("Prototypical Networks", "Omniglot", "5-way 1-shot"): "98.8",
    ("Prototypical Networks", "Omniglot", "5-way 5-shot"): "99.7",
    ("Prototypical Networks", "Omniglot", "20-way 1-shot"): "96.0",
    ("Prototypical Networks", "Omniglot", "20-way 5-shot"): "98.9",
    ("Prototypical Networks", "CUB", "50-way 0-shot"): "54.6",
    # Vinyals et al. 2016, Omniglot (cosine, no fine-tuning); their conv Siamese baseline
    ("Matching Networks", "Omniglot", "5-way 1-shot"): "98.1",
    ("Matching Networks", "Omniglot", "5-way 5-shot"): "98.9",
    ("Matching Networks", "Omniglot", "20-way 1-shot"): "93.8",
    ("Matching Networks", "Omniglot", "20-way 5-shot"): "98.5",
    ("Convolutional Siamese Net (Vinyals)", "Omniglot", "5-way 1-shot"): "96.7",
    ("Convolutional Siamese Net (Vinyals)", "Omniglot", "5-way 5-shot"): "98.4",
    ("Convolutional Siamese Net (Vinyals)", "Omniglot", "20-way 1-shot"): "88.0",
    ("Convolutional Siamese Net (Vinyals)", "Omniglot", "20-way 5-shot"): "96.5",
    # Koch et al. 2015: Omniglot verification accuracy (30k to 150k training pairs, with and without distortions)
    ("Convolutional Siamese Net", "Omniglot", "verification"): "90.61–93.42",
    # Finn et al. 2017 (MAML)
    ("MAML", "Omniglot", "5-way 1-shot"): "98.7 ± 0.4",
    ("MAML", "Omniglot", "5-way 5-shot"): "99.9 ± 0.1",
    ("MAML", "Omniglot", "20-way 1-shot"): "95.8 ± 0.3",
    ("MAML", "Omniglot", "20-way 5-shot"): "98.9 ± 0.2",
    ("MAML, no conv", "Omniglot", "5-way 1-shot"): "89.7 ± 1.1",
    ("MAML, no conv", "Omniglot", "5-way 5-shot"): "97.5 ± 0.6",
    ("MAML", "miniImageNet", "5-way 1-shot"): "48.70 ± 1.84",
    ("MAML", "miniImageNet", "5-way 5-shot"): "63.11 ± 0.92",
    ("first-order MAML", "miniImageNet", "5-way 1-shot"): "48.07 ± 1.75",
    ("first-order MAML", "miniImageNet", "5-way 5-shot"): "63.15 ± 0.91",
    # Ravi & Larochelle 2017 (meta-learner LSTM), their Mini-ImageNet table (Matching Network rows as they report them)
    ("Baseline-finetune", "miniImageNet", "5-way 1-shot"): "28.86 ± 0.54",
    ("Baseline-finetune", "miniImageNet", "5-way 5-shot"): "49.79 ± 0.79",
    ("Baseline-nearest-neighbor", "miniImageNet", "5-way 1-shot"): "41.08 ± 0.70",
    ("Baseline-nearest-neighbor", "miniImageNet", "5-way 5-shot"): "51.04 ± 0.65",
    ("Matching Network", "miniImageNet", "5-way 1-shot"): "43.40 ± 0.78",
    ("Matching Network", "miniImageNet", "5-way 5-shot"): "51.09 ± 0.71",
    ("Matching Network FCE", "miniImageNet", "5-way 1-shot"): "43.56 ± 0.84",
    ("Matching Network FCE", "miniImageNet", "5-way 5-shot"): "55.31 ± 0.73",
    ("Meta-Learner LSTM", "miniImageNet", "5-way 1-shot"): "43.44 ± 0.77",
    ("Meta-Learner LSTM", "miniImageNet", "5-way 5-shot"): "60.60 ± 0.71",
}


def paper(method: str, dataset: str, setting: str) -> str:
    """The paper's figure for a method and setting, or an em dash where the slides give none."""
    return PAPER.get((method, dataset, setting), "—")
