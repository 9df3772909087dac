"""Grader-side tests of the 'LRUA memory' homework (Santoro et al., 2016).

w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t; w^lu_t(i) = 1 if w^u_t(i) <= m(w^u_t, n) else 0, with
m(v, n) the n-th smallest element; w^w_t = sigma(alpha) w^r_{t-1} + (1 - sigma(alpha)) w^lu_{t-1};
reading: softmax over slots of the cosine similarity between the key and each memory row.
"""

from __future__ import annotations

import numpy as np

from metaedu.grading.spec import Test

SEED = 2026
NOTEBOOK_CPU_S = 120  # CPU seconds for the whole notebook in stage A (kernel start included)


def ref_least_used(usage, n_reads):
    nth = np.sort(usage, axis=-1)[:, n_reads - 1 : n_reads]
    return (usage <= nth).astype(float)


def ref_usage(prev_usage, read_w, write_w, gamma):
    return gamma * prev_usage + read_w + write_w


def ref_write_weights(prev_read, prev_least_used, alpha):
    gate = 1.0 / (1.0 + np.exp(-alpha))[:, None]
    return gate * prev_read + (1.0 - gate) * prev_least_used


def ref_read_weights(key, memory):
    cos = np.einsum("bw,bsw->bs", key, memory)
    cos = cos / (np.linalg.norm(key, axis=-1)[:, None] * np.linalg.norm(memory, axis=-1))
    e = np.exp(cos - cos.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _softmax_rows(rng, b, s):
    e = np.exp(rng.normal(size=(b, s)))
    return e / e.sum(-1, keepdims=True)


TESTS = [
    # visible checks
    Test("least-used weights of one usage vector", "least_used", 1, "least_used_weights",
         lambda rng: [np.array([[0.5, 0.1, 0.9, 0.3]]), 2], ref_least_used, visible=True),
    Test("usage update with gamma = 0.5", "usage", 1, "update_usage",
         lambda rng: [np.array([[1.0, 2.0]]), np.array([[0.5, 0.5]]), np.array([[0.0, 1.0]]), 0.5], ref_usage, visible=True),
    Test("write weights with alpha = 0 (an even mix)", "write", 1, "write_weights",
         lambda rng: [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([0.0])], ref_write_weights, visible=True),
    Test("read weights of an aligned key", "read", 1, "read_weights",
         lambda rng: [np.array([[1.0, 0.0]]), np.array([[[2.0, 0.0], [0.0, 1.0]]])], ref_read_weights, visible=True),
    # hidden tests
    Test("least-used weights: batch of 4, 10 slots, 3 reads", "least_used", 2, "least_used_weights",
         lambda rng: [rng.random((4, 10)), 3], ref_least_used),
    Test("least-used weights: ties at the n-th smallest usage", "least_used", 1, "least_used_weights",
         lambda rng: [np.array([[0.2, 0.1, 0.2, 0.7, 0.2], [0.3, 0.3, 0.1, 0.9, 0.0]]), 2], ref_least_used),
    Test("usage update: batch of 3, 6 slots", "usage", 2, "update_usage",
         lambda rng: [rng.random((3, 6)), _softmax_rows(rng, 3, 6), _softmax_rows(rng, 3, 6), 0.95], ref_usage),
    Test("write weights: one gate per sequence", "write", 2, "write_weights",
         lambda rng: [_softmax_rows(rng, 3, 5), ref_least_used(rng.random((3, 5)), 1), rng.normal(size=3)], ref_write_weights),
    Test("read weights: batch of 2, 6 slots, 4-dim keys", "read", 2, "read_weights",
         lambda rng: [rng.normal(size=(2, 4)), rng.normal(size=(2, 6, 4))], ref_read_weights),
]
