"""Grader-side tests of the 'MAML inner loop and its meta-gradient' homework (Finn et al., 2017).

The model is linear, f_w(x) = x . w, with the mean squared error, so everything has a closed
form: grad L(w) = (2/n) X^T (X w - y), Hessian H = (2/n) X^T X, one inner step
w' = w - alpha grad L_s(w) has Jacobian (I - alpha H_s), and the meta-gradient after k steps is
(I - alpha H_s)^k grad L_q(w_k) (first-order MAML drops the product).
"""

from __future__ import annotations

import numpy as np

from metaedu.grading.spec import Test

SEED = 2025
NOTEBOOK_CPU_S = 120  # CPU seconds for the whole notebook in stage A (kernel start included)


def _grad(w, x, y):
    return 2.0 / len(y) * x.T @ (x @ w - y)


def ref_inner_step(w, x_s, y_s, inner_lr):
    return w - inner_lr * _grad(w, x_s, y_s)


def ref_adapt(w, x_s, y_s, inner_lr, steps):
    for _ in range(steps):
        w = ref_inner_step(w, x_s, y_s, inner_lr)
    return w


def ref_meta_gradient(w, x_s, y_s, x_q, y_q, inner_lr, steps, first_order):
    w_k = ref_adapt(w, x_s, y_s, inner_lr, steps)
    g = _grad(w_k, x_q, y_q)
    if first_order:
        return g
    jac = np.linalg.matrix_power(np.eye(len(w)) - inner_lr * 2.0 / len(y_s) * x_s.T @ x_s, steps)
    return jac.T @ g


def _task(rng, dim, n_s, n_q):
    w_true = rng.normal(size=dim)
    x_s, x_q = rng.normal(size=(n_s, dim)), rng.normal(size=(n_q, dim))
    return [rng.normal(size=dim), x_s, x_s @ w_true, x_q, x_q @ w_true]


_VW = np.array([1.0, -1.0])
_VX = np.array([[1.0, 0.0], [0.0, 2.0]])
_VY = np.array([0.0, 1.0])

TESTS = [
    # visible checks (the notebook's tests cells)
    Test("one inner step on a 2-point task", "inner_step", 1, "inner_step",
         lambda rng: [_VW, _VX, _VY, 0.1], ref_inner_step, visible=True),
    Test("two inner steps on a 2-point task", "adapt", 1, "adapt",
         lambda rng: [_VW, _VX, _VY, 0.1, 2], ref_adapt, visible=True),
    Test("meta-gradient through one step", "meta_gradient", 1, "meta_gradient",
         lambda rng: [_VW, _VX, _VY, _VX, _VY, 0.1, 1, False], ref_meta_gradient, visible=True),
    # hidden tests
    Test("inner step: 5-dim weights, 10 support points", "inner_step", 2, "inner_step",
         lambda rng: [*_task(rng, 5, 10, 4)[:3], 0.05], ref_inner_step),
    Test("adapt: 3 steps, 4-dim weights", "adapt", 2, "adapt",
         lambda rng: [*_task(rng, 4, 6, 4)[:3], 0.1, 3], ref_adapt),
    Test("adapt: zero steps leaves the weights alone", "adapt", 1, "adapt",
         lambda rng: [*_task(rng, 3, 5, 2)[:3], 0.1, 0], ref_adapt),
    Test("meta-gradient: second order through 3 steps", "meta_gradient", 3, "meta_gradient",
         lambda rng: [*_task(rng, 4, 8, 6), 0.05, 3, False], ref_meta_gradient),
    Test("meta-gradient: first-order approximation", "meta_gradient", 2, "meta_gradient",
         lambda rng: [*_task(rng, 4, 8, 6), 0.05, 3, True], ref_meta_gradient),
]
