"""MAML-RL against independent references: the policy gradient against finite differences of the exact
expected return of a one-step task, returns-to-go by hand, the inner step as a per-task loop, and
the batched sampler's task-to-weights pairing."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metaedu.nn.functional import parameter_dict, per_task
from metaedu.rl.envs import PointNavigation
from metaedu.rl.maml_rl import (
    GaussianPolicy,
    MAMLRLSettings,
    adapt,
    make_learner,
    policy_data,
    returns_to_go,
    sample_trajectories,
    surrogate_loss,
    train_policy,
)
from metaedu.rl.rollout import Trajectories

D = torch.float64


def test_the_policy_gradient_equals_finite_differences_of_the_expected_return_of_a_one_step_task():
    """One step, r(a) = -|a - g|^2: E[r] = -(|mu(s) - g|^2 + sum sigma^2) exactly, so J(theta) is known."""
    torch.manual_seed(0)
    policy = GaussianPolicy(2, 2, (5,), init_std=0.7).double()
    policy.mean.net[0].register_forward_hook(lambda m, i, o: torch.tanh(o))  # a smooth network
    s = torch.tensor([[0.3, -0.2]], dtype=D)
    g = torch.tensor([0.4, 0.1], dtype=D)
    params = dict(policy.named_parameters())

    def expected_return(p):
        out = functional_call(policy, p, (s,))[0]
        return -(((out[:2] - g) ** 2).sum() + torch.exp(2 * out[2:]).sum())

    reference = []
    for name, p in params.items():  # central differences, one entry at a time
        grad = torch.zeros_like(p)
        for j in range(p.numel()):
            up = {k: v.detach().clone() for k, v in params.items()}
            down = {k: v.detach().clone() for k, v in params.items()}
            up[name].view(-1)[j] += 1e-6
            down[name].view(-1)[j] -= 1e-6
            grad.view(-1)[j] = (expected_return(up) - expected_return(down)) / 2e-6
        reference.append(grad)
    # REINFORCE with a baseline on many one-step episodes: -grad of the surrogate
    n = 400_000
    gen = torch.Generator().manual_seed(1)
    out = policy(s.expand(n, -1))
    a = out[:, :2].detach() + out[:, 2:].detach().exp() * torch.randn(n, 2, generator=gen, dtype=D)
    r = -((a - g) ** 2).sum(1)
    y = torch.cat([a, (r - r.mean())[:, None]], 1)[None]
    estimate = torch.autograd.grad(-surrogate_loss(policy(s.expand(n, -1))[None], y)[0], list(params.values()))
    flat_est, flat_ref = torch.cat([e.flatten() for e in estimate]), torch.cat([f.flatten() for f in reference])
    assert torch.nn.functional.cosine_similarity(flat_est, flat_ref, 0) > 0.995
    assert abs(flat_est.norm() / flat_ref.norm() - 1) < 0.03
    log_std_grad = reference[list(params).index("log_std")]
    torch.testing.assert_close(log_std_grad, -2 * torch.exp(2 * params["log_std"].detach()))  # the closed form


def test_returns_to_go_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    torch.testing.assert_close(returns_to_go(r, 0.5), torch.tensor([[1 + 1 + 0.75, 2 + 1.5, 3.0], [0 - 0.5 + 1, -1 + 2, 4.0]]))


def test_policy_data_groups_copies_by_task_and_centres_the_advantages_per_task_and_step():
    tasks, k, h = 2, 3, 4
    obs = torch.arange(tasks * k * (h + 1), dtype=torch.float32).view(tasks * k, h + 1, 1).repeat(1, 1, 2)
    actions = torch.ones(tasks * k, h, 2) * 0.1
    rewards = torch.arange(tasks * k, dtype=torch.float32)[:, None].repeat(1, h)  # copy c earns c every step
    x, y = policy_data(Trajectories(obs, actions, rewards), tasks, 1.0, max_action=0.1)
    assert x.shape == (tasks, k * h, 2) and y.shape == (tasks, k * h, 3)
    assert torch.all(x[0, :, 0] < k * (h + 1)) and torch.all(x[1, :, 0] >= k * (h + 1))  # task-major
    torch.testing.assert_close(y[..., :2], torch.ones(tasks, k * h, 2))  # in units of max_action
    # returns-to-go c * (h - t); the mean over the task's copies at step t is subtracted
    expected = torch.tensor([-1.0, 0.0, 1.0])[:, None] * torch.tensor([4.0, 3.0, 2.0, 1.0])
    torch.testing.assert_close(y[0, :, 2], expected.flatten())
    torch.testing.assert_close(y[1, :, 2], expected.flatten())


def test_the_inner_step_is_theta_plus_alpha_times_each_tasks_policy_gradient():
    settings = MAMLRLSettings(horizon=5, episodes=4, meta_batch=3, hidden=(8,), inner_lr=0.2)
    learner = make_learner(settings)
    env = PointNavigation(12, 5)
    goals = PointNavigation.sample_goals(3, torch.Generator().manual_seed(0))
    fast, before = adapt(learner, env, goals, settings, torch.Generator().manual_seed(1))
    x, y = policy_data(before, 3, settings.discount, env.max_action)
    theta = dict(learner.model.named_parameters())
    for i in range(3):  # one task at a time, on the module itself
        loss = surrogate_loss(functional_call(learner.model, theta, (x[i],))[None], y[i][None])[0]
        grads = torch.autograd.grad(loss, list(theta.values()))
        for (name, p), gr in zip(theta.items(), grads):
            torch.testing.assert_close(fast[name][i], p - 0.2 * gr, rtol=1e-5, atol=1e-6)


def test_each_task_is_sampled_with_its_own_weights():
    settings = MAMLRLSettings(horizon=3, episodes=2, meta_batch=3, hidden=(4,))
    policy = GaussianPolicy(2, 2, (4,), 1e-9)
    fast = per_task(parameter_dict(policy), 3)
    last = [n for n in fast if n.startswith("mean.") and n.endswith("bias")][-1]
    fast = {n: v.detach().clone() for n, v in fast.items()}
    fast[[n for n in fast if n.endswith("weight")][-1]].zero_()  # the mean is the last bias alone
    fast[last] = torch.tensor([[0.5, 0.0], [0.0, -0.5], [-0.2, 0.2]])
    env = PointNavigation(6, 3)
    traj = sample_trajectories(policy, fast, env, torch.zeros(3, 2), settings.episodes, torch.Generator())
    expected = (fast[last] * env.max_action).repeat_interleave(2, 0)  # copies 2i, 2i + 1 are task i's
    torch.testing.assert_close(traj.actions[:, 0], expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="N \\* K"):
        sample_trajectories(policy, fast, PointNavigation(5, 3), torch.zeros(3, 2), 2, torch.Generator())


@pytest.mark.parametrize("method", ["maml", "pretrained"])
def test_training_resumes_from_its_checkpoint_as_if_uninterrupted(method, tmp_path):
    settings = MAMLRLSettings(horizon=4, episodes=3, meta_batch=2, hidden=(8,), steps=4)
    whole, h_whole = train_policy(method, settings, seed=3, progress=False)
    half = MAMLRLSettings(**{**settings.__dict__, "steps": 2})
    train_policy(method, half, seed=3, checkpoint=tmp_path / "c.pt", progress=False)
    resumed, h_resumed = train_policy(method, settings, seed=3, checkpoint=tmp_path / "c.pt", progress=False)
    start = make_learner(settings, seed=3)
    for (name, p), q, p0 in zip(whole.named_parameters(), resumed.parameters(), start.parameters()):
        torch.testing.assert_close(p, q)
        assert not torch.equal(p, p0), name  # training moved every weight
    assert h_resumed.steps_done == 4


def test_settings_and_inputs_are_checked():
    with pytest.raises(ValueError, match="episodes"):
        MAMLRLSettings(episodes=1)
    with pytest.raises(ValueError, match="discount"):
        MAMLRLSettings(discount=1.5)
    with pytest.raises(ValueError, match="method"):
        train_policy("trpo", MAMLRLSettings.quick())
    with pytest.raises(ValueError, match="2 \\* 2"):
        surrogate_loss(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3))
    assert isinstance(GaussianPolicy(2, 2, (3,), 1.0).log_std, nn.Parameter)
