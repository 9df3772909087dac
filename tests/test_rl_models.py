"""Dynamics models, segments and the planner against hand computations and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from metaedu.rl.dynamics import DynamicsModel, Normaliser, SegmentBuffer, bounded_log_var, gaussian_nll
from metaedu.rl.mpc import Planner, plan, sequence_returns
from metaedu.rl.rollout import Trajectories


def test_gaussian_nll_is_the_hand_computed_negative_log_likelihood():
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(2, 5, 6, generator=gen)
    y = torch.randn(2, 5, 3, generator=gen)
    mu, log_var = out[..., :3], bounded_log_var(out[..., 3:], -8.0, 1.0)
    by_hand = torch.zeros(2)
    for task in range(2):
        total = 0.0
        for i in range(5):
            for d in range(3):
                var = math.exp(float(log_var[task, i, d]))
                total += 0.5 * (math.log(2 * math.pi * var) + (float(y[task, i, d]) - float(mu[task, i, d])) ** 2 / var)
        by_hand[task] = total / 5
    torch.testing.assert_close(gaussian_nll(out, y), by_hand, rtol=1e-5, atol=1e-5)
    normal = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))
    torch.testing.assert_close(gaussian_nll(out, y), -normal.log_prob(y).sum(-1).mean(-1))


def test_the_log_variance_is_bounded_softly():
    raw = torch.linspace(-50, 50, 201)
    lv = bounded_log_var(raw, -8.0, 1.0)
    overshoot = math.log1p(math.exp(-9.0))  # the lower softplus's excess at the top (see the docstring)
    assert lv.min() >= -8.0 and lv.max() <= 1.0 + overshoot and lv[100] > -8.0
    assert float(lv.max()) > 1.0 - 1e-3  # it does reach the top: the bound is tight
    assert torch.all(lv[1:] >= lv[:-1])  # monotone
    assert abs(float(bounded_log_var(torch.tensor(-3.5), -8.0, 1.0)) + 3.5) < 0.05  # near identity mid-range
    with pytest.raises(ValueError, match="2 \\* 3"):
        gaussian_nll(torch.zeros(1, 2, 5), torch.zeros(1, 2, 3))


def test_the_normaliser_round_trips_state_changes():
    gen = torch.Generator().manual_seed(1)
    obs, act = torch.randn(50, 3, generator=gen), torch.randn(50, 2, generator=gen)
    nxt = obs + 0.1 * torch.randn(50, 3, generator=gen) + 0.5
    norm = Normaliser(3, 2).fit(obs, act, nxt)
    d = norm.targets(obs, nxt)
    torch.testing.assert_close(d.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.next_obs(obs, d), nxt, atol=1e-5, rtol=1e-5)


def test_segments_are_consecutive_steps_of_one_episode():
    episodes, steps = 3, 12
    obs = torch.arange(episodes * (steps + 1), dtype=torch.float32).view(episodes, steps + 1, 1).repeat(1, 1, 2)
    actions = 1000 + torch.arange(episodes * steps, dtype=torch.float32).view(episodes, steps, 1)
    buffer = SegmentBuffer()
    buffer.add(Trajectories(obs, actions, torch.zeros(episodes, steps)))
    norm = Normaliser(2, 1)  # identity statistics: the segments show raw values
    seg = buffer.sample_segments(20, 3, 4, norm, torch.Generator().manual_seed(0))
    states = torch.cat([seg.x_support[..., 0], seg.x_query[..., 0]], 1)  # [20, 7]
    assert torch.all(states[:, 1:] - states[:, :-1] == 1)  # consecutive steps
    episode = (states[:, 0] // (steps + 1))
    assert torch.all(states[:, -1] // (steps + 1) == episode)  # never across episodes
    assert torch.all(seg.y_query == 1) and torch.all(seg.y_support == 1)  # s' - s
    t = states - episode[:, None] * (steps + 1)
    assert torch.all(torch.cat([seg.x_support[..., 2], seg.x_query[..., 2]], 1) == 1000 + episode[:, None] * steps + t)
    with pytest.raises(ValueError, match="do not fit"):
        buffer.sample_segments(1, 8, 8, norm, torch.Generator())


def test_the_model_predicts_through_its_normaliser():
    model = DynamicsModel(3, 2, (8,))
    gen = torch.Generator().manual_seed(2)
    obs, act = torch.randn(4, 3, generator=gen), torch.randn(4, 2, generator=gen)
    model.norm.fit(obs, act, obs + 1.0)
    assert model(model.norm.inputs(obs, act)).shape == (4, 6)


# ----------------------------------------------------------------------------- the planner


def linear_quadratic(b: int = 2):
    """s' = A s + B a, reward -(|s'|^2 + rho |a|^2): the open-loop optimum is a least-squares problem."""
    A = torch.tensor([[1.0, 0.1], [0.0, 1.0]])
    B = torch.tensor([[0.0], [0.1]])
    rho = 0.01

    def predict(s, a):
        return s @ A.T + a @ B.T

    def reward(s, a, s_next):
        return -((s_next**2).sum(-1) + rho * (a**2).sum(-1))

    return A, B, rho, predict, reward


def optimal_plan(A, B, rho, s0, horizon):
    """argmin over a_0..a_{H-1} of sum_h |s_{h+1}|^2 + rho |a_h|^2 with s_{h+1} = A^{h+1} s0 + sum_j A^{h-j} B a_j."""
    n = A.shape[0]
    G = torch.zeros(horizon * n, horizon)
    c = torch.zeros(horizon * n)
    power = torch.eye(n)
    for h in range(horizon):
        power = A @ power  # A^{h+1}
        c[h * n:(h + 1) * n] = power @ s0
        for j in range(h + 1):
            G[h * n:(h + 1) * n, j] = (torch.linalg.matrix_power(A, h - j) @ B)[:, 0]
    # minimise |G a + c|^2 + rho |a|^2
    return torch.linalg.solve(G.T @ G + rho * torch.eye(horizon), -G.T @ c)


def test_cem_finds_the_closed_form_optimum_of_a_linear_quadratic_problem():
    A, B, rho, predict, reward = linear_quadratic()
    s0 = torch.tensor([[1.0, -0.5], [-0.3, 0.8]])
    horizon = 5
    planner = Planner(horizon, 2000, "cem", iterations=12, elite=0.05, low=-10, high=10)
    first = plan(predict, reward, s0, 1, planner, torch.Generator().manual_seed(0))
    for i in range(2):
        best = optimal_plan(A, B, rho, s0[i], horizon)
        assert abs(float(first[i, 0]) - float(best[0])) < 0.05 * max(1.0, abs(float(best[0])))


def test_random_shooting_keeps_the_best_of_its_candidates():
    A, B, rho, predict, reward = linear_quadratic()
    s0 = torch.tensor([[1.0, -0.5]])
    planner = Planner(4, 300, "random", low=-3, high=3)
    first = plan(predict, reward, s0, 1, planner, torch.Generator().manual_seed(5))
    plans = -3 + 6 * torch.rand(1, 300, 4, 1, generator=torch.Generator().manual_seed(5))  # the same draws
    returns = []
    for k in range(300):  # a slow loop over candidates and steps as the reference
        s, total = s0[0], 0.0
        for h in range(4):
            a = plans[0, k, h]
            s_next = A @ s + B @ a
            total += float(-(s_next @ s_next) - rho * (a @ a))
            s = s_next
        returns.append(total)
    best = max(range(300), key=returns.__getitem__)
    torch.testing.assert_close(first[0], plans[0, best, 0])
    torch.testing.assert_close(sequence_returns(predict, reward, s0, plans)[0], torch.tensor(returns), rtol=1e-5,
                               atol=1e-5)


def test_planner_settings_are_checked():
    with pytest.raises(ValueError, match="method"):
        Planner(5, 10, "gradient")
    with pytest.raises(ValueError, match="elite"):
        Planner(5, 10, "cem", elite=0.01)
    with pytest.raises(ValueError, match="low"):
        Planner(5, 10, low=1.0, high=1.0)
