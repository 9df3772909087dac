"""ARML's six 2-D regression families: each sample satisfies its family's definition.

The reference for each family is a least-squares fit with the family's own basis (lines, polynomials,
surfaces), or with the basis the family is linear in once its nonlinear coefficient is known
(sinusoids given the frequency, ripples given the curvature): without noise the residual vanishes
and the fitted coefficients are the sampled ones; with noise the residuals have the noise's spread.
"""

from __future__ import annotations

import math

import pytest
import torch

from metaedu.tasks.regression2d import FAMILIES, NOISE_STD, RANGES, FamilyTasks, family_function


def _basis(name: str, x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Columns the family is linear in (given its nonlinear coefficient), for one task: ``x`` ``[n, 2]``."""
    x1, x2, one = x[:, 0], x[:, 1], torch.ones(len(x), dtype=x.dtype)
    if name == "sinusoid":  # A sin(w x + phi) = A cos(phi) sin(w x) + A sin(phi) cos(w x)
        w = coef[1]
        return torch.stack([torch.sin(w * x1), torch.cos(w * x1)], 1)
    if name == "line":
        return torch.stack([x1, one], 1)
    if name == "quadratic":
        return torch.stack([x1**2, x1, one], 1)
    if name == "cubic":
        return torch.stack([x1**3, x1**2, x1, one], 1)
    if name == "quadratic surface":
        return torch.stack([x1**2, x2**2], 1)
    return torch.stack([torch.sin(-coef[0] * (x1**2 + x2**2)), one], 1)  # ripple, given a


def _expected_solution(name: str, coef: torch.Tensor) -> torch.Tensor:
    if name == "sinusoid":
        a, _, phi = coef[:3]
        return torch.stack([a * torch.cos(phi), a * torch.sin(phi)])
    if name == "ripple":
        return torch.stack([torch.ones((), dtype=coef.dtype), coef[1]])
    return coef[: len(RANGES[name])]


@pytest.mark.parametrize("name", FAMILIES)
def test_noiseless_samples_are_fitted_exactly_by_their_family(name):
    tasks = FamilyTasks(k_shot=10, n_query=15, families=(name,), noise_std=0.0, seed=3).sample(20)
    assert (tasks.params["family"] == FAMILIES.index(name)).all()
    x = torch.cat([tasks.x_support, tasks.x_query], 1).double()
    y = torch.cat([tasks.y_support, tasks.y_query], 1).double()[..., 0]
    for i in range(20):
        coef = tasks.params["coef"][i].double()
        basis = _basis(name, x[i], coef)
        solution = torch.linalg.lstsq(basis, y[i][:, None]).solution[:, 0]
        residual = y[i] - basis @ solution
        assert residual.abs().max() < 1e-4 * (1 + y[i].abs().max()), (name, i)
        torch.testing.assert_close(solution, _expected_solution(name, coef), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_coefficients_and_inputs_lie_in_their_ranges(name):
    tasks = FamilyTasks(k_shot=10, n_query=10, families=(name,), seed=4).sample(500)
    coef = tasks.params["coef"]
    for i, (low, high) in enumerate(RANGES[name]):
        assert coef[:, i].min() >= low and coef[:, i].max() <= high, (name, i)
        assert coef[:, i].max() - coef[:, i].min() > 0.8 * (high - low), "the range is not covered"
    assert (coef[:, len(RANGES[name]):] == 0).all()
    x = torch.cat([tasks.x_support, tasks.x_query], 1)
    assert x.min() >= -5 and x.max() <= 5
    if name in ("sinusoid", "line", "quadratic", "cubic"):
        assert (x[..., 1] == 1).all()  # one-dimensional families: x_2 fixed at 1
    else:
        assert x[..., 1].std() > 2.5  # uniform on [-5, 5]: std 2.89


def test_noise_has_the_papers_spread_and_the_clean_query_is_the_function():
    tasks = FamilyTasks(k_shot=10, n_query=40, families=("line",), seed=5).sample(300)
    clean = family_function(tasks.x_query, tasks.params["family"], tasks.params["coef"])
    torch.testing.assert_close(tasks.params["clean_query"], clean)
    noise = tasks.y_query - clean
    assert abs(float(noise.std()) - NOISE_STD) < 0.01
    assert abs(float(noise.mean())) < 0.01


def test_families_are_drawn_uniformly_and_reproducibly():
    a = FamilyTasks(seed=7).sample(3000)
    share = torch.bincount(a.params["family"], minlength=6).float() / 3000
    assert (share - 1 / 6).abs().max() < 0.03
    b = FamilyTasks(seed=7).sample(3000)
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.y_query, b.y_query)
    assert not torch.equal(a.y_query, FamilyTasks(seed=8).sample(3000).y_query)
    assert a.x_support.shape == (3000, 10, 2) and a.y_support.shape == (3000, 10, 1)


def test_family_function_matches_the_table_by_hand():
    x = torch.tensor([[[1.5, -2.0]]]).expand(6, 1, 2)
    coef = torch.tensor([[2.0, 1.1, 0.3, 0.0], [0.5, -1.0, 0, 0], [0.1, 1.0, -2.0, 0], [0.05, -0.1, 1.0, 2.0],
                         [0.5, -0.25, 0, 0], [0.1, 2.0, 0, 0]])
    got = family_function(x, torch.arange(6), coef)[:, 0, 0]
    x1, x2 = 1.5, -2.0
    want = torch.tensor([2.0 * math.sin(1.1 * x1 + 0.3), 0.5 * x1 - 1.0, 0.1 * x1**2 + x1 - 2.0,
                         0.05 * x1**3 - 0.1 * x1**2 + x1 + 2.0, 0.5 * x1**2 - 0.25 * x2**2,
                         math.sin(-0.1 * (x1**2 + x2**2)) + 2.0])
    torch.testing.assert_close(got, want)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="families"):
        FamilyTasks(families=("circle",))
    with pytest.raises(ValueError, match="k_shot"):
        FamilyTasks(k_shot=0)
    with pytest.raises(ValueError, match="noise_std"):
        FamilyTasks(noise_std=-1.0)
    with pytest.raises(ValueError, match="tasks"):
        FamilyTasks().sample(0)
