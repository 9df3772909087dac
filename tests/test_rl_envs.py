"""The meta-RL environments against independent references: gymnasium's own pendulum, the equations of
motion written out by hand, single copies against the batch, and gymnasium's environment checker."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from metaedu.rl.envs import MotorPendulum, MotorTasks, PointNavigation, motor_pendulum_env, point_navigation_env
from metaedu.rl.mujoco_envs import MujocoMotorEnv, mujoco_available


def set_state(env: MotorPendulum, theta, theta_dot) -> None:
    env.theta = torch.as_tensor(theta, dtype=torch.float32).clone()
    env.theta_dot = torch.as_tensor(theta_dot, dtype=torch.float32).clone()


def test_one_motor_pendulum_steps_like_gymnasiums_pendulum():
    reference = gymnasium.make("Pendulum-v1").unwrapped
    ours = MotorPendulum(1, motors=1)
    rng = np.random.default_rng(0)
    for _ in range(50):
        theta, theta_dot, torque = rng.uniform(-np.pi, np.pi), rng.uniform(-8, 8), rng.uniform(-2, 2)
        reference.reset(seed=0)
        reference.state = np.array([theta, theta_dot])
        obs_ref, r_ref, *_ = reference.step(np.array([torque]))
        ours.reset(seed=0)
        set_state(ours, [theta], [theta_dot])
        obs, r, *_ = ours.step(torch.tensor([[torque / 2.0]]))  # action in [-1, 1] times max_torque 2
        np.testing.assert_allclose(obs[0].numpy(), obs_ref, rtol=1e-5, atol=1e-5)
        assert r[0].item() == pytest.approx(r_ref, rel=1e-5, abs=1e-5)


def test_motors_masses_and_lengths_follow_the_equations_of_motion():
    """theta_dot' = theta_dot + (3 g / (2 l) sin theta + 3 / (m l^2) u) dt, u = max_torque sum_i g_i a_i."""
    n, dt, g = 6, 0.05, 10.0
    env = MotorPendulum(n, motors=2)
    gen = torch.Generator().manual_seed(1)
    tasks = MotorTasks.sample(n, 2, gen, episode_steps=200, fail_probability=0.0)
    env.set_tasks(tasks)
    env.reset(seed=0)
    theta = np.linspace(-3, 3, n)
    theta_dot = np.linspace(-2, 2, n)
    set_state(env, theta, theta_dot)
    actions = torch.rand(n, 2, generator=gen) * 2 - 1
    env.step(actions)
    m, l = tasks.body[:, 0].double().numpy(), tasks.body[:, 1].double().numpy()
    u = 2.0 * (tasks.gains.double() * actions.double()).sum(1).numpy()
    expected_dot = np.clip(theta_dot + (3 * g / (2 * l) * np.sin(theta) + 3 / (m * l**2) * u) * dt, -8, 8)
    np.testing.assert_allclose(env.theta_dot.numpy(), expected_dot, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(env.theta.numpy(), theta + expected_dot * dt, rtol=1e-5, atol=1e-5)


def test_a_motor_fails_at_its_step_and_reversal_flips_its_torque():
    env = MotorPendulum(2, motors=2)
    tasks = MotorTasks.nominal(2, 2, 2).crippled(0, -1.0, step=3)
    env.set_tasks(tasks)
    env.reset(seed=0)
    push_motor_0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    for t in range(5):
        gains = env.gains_now()
        assert gains[:, 0].tolist() == ([1.0, 1.0] if t < 3 else [-1.0, -1.0])
        set_state(env, [0.0, 0.0], [0.0, 0.0])  # upright and still: only the motor moves it
        env.step(push_motor_0)
        assert torch.all(torch.sign(env.theta_dot) == (1 if t < 3 else -1))


def test_batched_copies_evolve_as_single_copies():
    n, steps = 5, 30
    gen = torch.Generator().manual_seed(2)
    tasks = MotorTasks.sample(n, 2, gen, episode_steps=steps)
    actions = torch.rand(steps, n, 2, generator=gen) * 2 - 1
    batch = MotorPendulum(n, max_steps=steps)
    batch.set_tasks(tasks)
    obs, _ = batch.reset(seed=3)
    start = (batch.theta.clone(), batch.theta_dot.clone())
    batch_obs = [obs]
    for t in range(steps):
        batch_obs.append(batch.step(actions[t])[0])
    for i in range(n):
        single = motor_pendulum_env(tasks.take(slice(i, i + 1)), max_steps=steps)
        single.reset(seed=0)
        set_state(single.vector, start[0][i:i + 1], start[1][i:i + 1])
        for t in range(steps):
            obs_i, *_ = single.step(actions[t, i].numpy())
            np.testing.assert_allclose(obs_i, batch_obs[t + 1][i].numpy(), rtol=1e-6, atol=1e-6)


def test_episodes_truncate_and_restart_on_the_next_step():
    env = MotorPendulum(3, max_steps=4)
    env.reset(seed=0)
    zero = torch.zeros(3, 2)
    for t in range(4):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated.any()
        assert truncated.all() == (t == 3)
    _, reward, _, truncated, _ = env.step(zero)  # next-step autoreset: a fresh start, reward 0
    assert (reward == 0).all() and not truncated.any() and (env.t == 0).all()


def test_point_navigation_kinematics_and_reward():
    env = PointNavigation(2, max_steps=10)
    env.set_goals(torch.tensor([[0.3, -0.2], [-0.5, 0.5]]))
    obs, _ = env.reset(seed=0)
    assert torch.equal(obs, torch.zeros(2, 2))
    obs, reward, *_ = env.step(torch.tensor([[0.05, 0.5], [-0.2, 0.01]]))
    expected = torch.tensor([[0.05, 0.1], [-0.1, 0.01]])  # each velocity clipped to [-0.1, 0.1]
    torch.testing.assert_close(obs, expected)
    torch.testing.assert_close(reward, -((expected - env.goals) ** 2).sum(1))


@pytest.mark.parametrize("make", [lambda: motor_pendulum_env(), lambda: point_navigation_env((0.2, 0.1))],
                         ids=["motor_pendulum", "point_navigation"])
def test_single_environments_pass_gymnasiums_checker(make):
    env = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    assert not [w for w in caught if "gymnasium" in str(w.filename)], [str(w.message) for w in caught]


def test_bad_tasks_and_actions_are_refused():
    env = MotorPendulum(2)
    with pytest.raises(ValueError, match="need 2 tasks"):
        env.set_tasks(MotorTasks.nominal(3, 2, 2))
    with pytest.raises(ValueError, match="actions must have shape"):
        env.step(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="motors must be indices"):
        MotorTasks.nominal(2, 2, 2).crippled(2, 0.0, 5)
    with pytest.raises(ValueError, match="positive"):
        MotorTasks(torch.ones(1, 2), torch.tensor([-1]), torch.ones(1, 2), torch.tensor([[0.0, 1.0]]))


@pytest.mark.skipif(not mujoco_available(), reason="needs the rl-full extra (mujoco)")
@pytest.mark.parametrize("robot", ["half_cheetah", "ant"])
def test_mujoco_robots_obey_their_motor_tasks(robot):
    env = MujocoMotorEnv(robot, 2, max_steps=20)
    everything_off = MotorTasks(torch.zeros(2, env.motors), torch.full((2,), -1), torch.zeros(2, env.motors),
                                torch.ones(2, 1))
    env.set_tasks(everything_off)
    env.reset(seed=0)
    env._obs[1] = env._obs[0]
    for e in env.envs[1:]:  # both copies in the same state
        e.set_state(env.envs[0].data.qpos.copy(), env.envs[0].data.qvel.copy())
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):  # motors with gain 0 do nothing: different actions, the same motion
        a = torch.rand(2, env.motors, generator=gen) * 2 - 1
        obs, *_ = env.step(a)
        np.testing.assert_allclose(obs[0].numpy(), obs[1].numpy(), atol=1e-6)
    tasks = env.sample_tasks(64, gen)
    disabled = (tasks.fail_gains == 0).float()
    per_group = torch.stack([disabled[:, list(g)].mean(1) for g in env.groups], 1)
    assert torch.all(per_group.sum(1) == 1), "exactly one joint or leg is disabled per task"
