"""Grader-side tests of the 'episodes and the prototype loss' homework (Snell et al., 2017).

References in NumPy, written independently of the solution notebook's torch code.
"""

from __future__ import annotations

import numpy as np

from metaedu.grading.spec import Test

SEED = 2024
NOTEBOOK_CPU_S = 120  # CPU seconds for the whole notebook in stage A (kernel start included)


def ref_prototypes(z_support, y_support, n_way):
    tasks, _, dim = z_support.shape
    out = np.zeros((tasks, n_way, dim))
    for t in range(tasks):  # a slow loop on purpose: one task and one class at a time
        for c in range(n_way):
            out[t, c] = z_support[t][y_support[t] == c].mean(0)
    return out


def ref_squared_distances(z_query, protos):
    diff = z_query[:, :, None, :] - protos[:, None, :, :]
    return (diff**2).sum(-1)


def ref_prototype_loss(z_support, y_support, z_query, y_query, n_way):
    logits = -ref_squared_distances(z_query, ref_prototypes(z_support, y_support, n_way))
    logits = logits - logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, y_query[..., None], -1)[..., 0]
    accuracy = (log_p.argmax(-1) == y_query).mean()
    return np.array(-picked.mean()), np.array(accuracy)


def _visible_support():
    z = np.array([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]]])
    y = np.array([[0, 0, 1, 1]])
    return z, y


def _episode(rng, tasks, n_way, k_shot, n_query, dim, shuffled):
    """Embeddings of an episode; ``shuffled`` mixes the support order (labels no longer class-major)."""
    y_s = np.tile(np.repeat(np.arange(n_way), k_shot), (tasks, 1))
    y_q = np.tile(np.repeat(np.arange(n_way), n_query), (tasks, 1))
    if shuffled:
        y_s = np.stack([rng.permutation(row) for row in y_s])
        y_q = np.stack([rng.permutation(row) for row in y_q])
    centres = rng.normal(size=(tasks, n_way, dim)) * 2
    z_s = np.take_along_axis(centres, y_s[..., None], 1) + rng.normal(size=(tasks, n_way * k_shot, dim))
    z_q = np.take_along_axis(centres, y_q[..., None], 1) + rng.normal(size=(tasks, n_way * n_query, dim))
    return z_s, y_s, z_q, y_q


TESTS = [
    # visible checks (the same inputs as the notebook's tests cells)
    Test("prototypes of a 2-way 2-shot toy episode", "prototypes", 1, "prototypes",
         lambda rng: [*_visible_support(), 2], ref_prototypes, visible=True),
    Test("squared distances of a toy query", "distances", 1, "squared_distances",
         lambda rng: [np.array([[[1.0, 1.0]]]), np.array([[[1.0, 0.0], [0.0, 3.0]]])], ref_squared_distances, visible=True),
    Test("loss and accuracy of a toy episode", "loss", 1, "prototype_loss",
         lambda rng: [*_visible_support(), np.array([[[1.0, 0.0], [0.0, 3.0]]]), np.array([[0, 1]]), 2],
         ref_prototype_loss, visible=True),
    # hidden tests
    Test("prototypes: 4 tasks, 5-way 3-shot, 8-dim", "prototypes", 2, "prototypes",
         lambda rng: [*_episode(rng, 4, 5, 3, 2, 8, False)[:2], 5], ref_prototypes),
    Test("prototypes: support not sorted by class", "prototypes", 2, "prototypes",
         lambda rng: [*_episode(rng, 3, 4, 2, 1, 5, True)[:2], 4], ref_prototypes),
    Test("squared distances: 3 tasks, 7 queries, 5 classes", "distances", 2, "squared_distances",
         lambda rng: [rng.normal(size=(3, 7, 6)), rng.normal(size=(3, 5, 6))], ref_squared_distances),
    Test("prototype loss: 2 tasks, 5-way 1-shot", "loss", 2, "prototype_loss",
         lambda rng: [*_episode(rng, 2, 5, 1, 3, 4, False), 5], ref_prototype_loss),
    Test("prototype loss: shuffled support and query", "loss", 2, "prototype_loss",
         lambda rng: [*_episode(rng, 3, 3, 2, 2, 4, True), 3], ref_prototype_loss),
]
