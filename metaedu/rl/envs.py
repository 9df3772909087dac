"""Environments whose dynamics change from task to task, batched in torch, behind gymnasium's interfaces.

Two families, each a ``gymnasium.vector.VectorEnv`` whose arrays are torch tensors on ``device``
(many copies stepped at once: thousands of steps per second on one CPU thread) and a plain
``gymnasium.Env`` with NumPy arrays for one copy, so other people's agents and wrappers work
with them (``gymnasium.utils.env_checker.check_env`` passes on the single versions):

* :class:`MotorPendulum`: gymnasium's pendulum swing-up (same equations, same reward) driven by
  ``motors`` motors on the one joint, each as strong as Pendulum-v1's. A task sets the mass
  ``m``, the length ``l`` and each motor's gain ``g_i``; it may change the gains in the middle
  of an episode (``fail_step``, ``fail_gains``): a motor that stops (gain 0) or whose wiring is
  reversed (gain -1), the pendulum's version of GrBAL's "disabled joint" and "crippled leg".
  With the torque ``u = max_torque * sum_i g_i a_i`` and actions ``a`` in ``[-1, 1]^motors``::

      theta_dot' = clip(theta_dot + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -8, 8)
      theta'     = theta + theta_dot' dt                      (semi-implicit Euler, dt = 0.05)
      r          = -(angle(theta)^2 + 0.1 theta_dot^2 + 0.001 sum_i (max_torque a_i)^2)

  Observations are ``(cos theta, sin theta, theta_dot)`` as in ``Pendulum-v1``; with one motor of
  gain 1, mass 1 and length 1 a step equals ``Pendulum-v1``'s (tested).
* :class:`PointNavigation`: Finn et al.'s 2-D navigation for MAML-RL. The observation is the
  position, the action a velocity command clipped to ``[-0.1, 0.1]^2``, the task a goal in the
  square ``[-0.5, 0.5]^2`` and the reward the negative squared distance to it:
  ``x' = x + clip(a)``, ``r = -||x' - goal||^2``.

Episodes last ``max_steps`` steps and end by truncation; the vector versions reset a finished
copy on the next call to ``step`` (gymnasium's next-step autoreset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

GRAVITY = 10.0  # g of Pendulum-v1


def angle_normalize(theta: torch.Tensor) -> torch.Tensor:
    """Wrap an angle into ``[-pi, pi)``."""
    return (theta + math.pi) % (2 * math.pi) - math.pi


def pendulum_step(theta, theta_dot, torque, mass, length, dt: float = 0.05, max_speed: float = 8.0):
    """One semi-implicit Euler step of the pendulum (all arguments broadcast; returns theta', theta_dot')."""
    accel = 3 * GRAVITY / (2 * length) * torch.sin(theta) + 3.0 / (mass * length**2) * torque
    theta_dot = (theta_dot + accel * dt).clamp(-max_speed, max_speed)
    return theta + theta_dot * dt, theta_dot


# ----------------------------------------------------------------------------- tasks


@dataclass
class MotorTasks:
    """One task per environment copy (every field has a leading dimension ``[B]``): the motors' gains,
    when and how they fail, and the body's physical parameters."""

    gains: torch.Tensor  # [B, motors] each motor's gain at the start of an episode
    fail_step: torch.Tensor  # [B] step at which the gains become fail_gains (-1: never)
    fail_gains: torch.Tensor  # [B, motors] the gains after the failure
    body: torch.Tensor  # [B, k] physical parameters (pendulum: mass, length; MuJoCo: damping scale)

    def __post_init__(self) -> None:
        if self.gains.dim() != 2 or self.fail_gains.shape != self.gains.shape:
            raise ValueError(f"gains and fail_gains must both be [B, motors], got {tuple(self.gains.shape)} and "
                             f"{tuple(self.fail_gains.shape)}")
        b = self.gains.shape[0]
        if self.fail_step.shape != (b,) or self.body.dim() != 2 or self.body.shape[0] != b:
            raise ValueError("fail_step must be [B] and body [B, k], with the B of gains (one task per copy)")
        if (self.body <= 0).any():
            raise ValueError("physical parameters (masses, lengths, damping scales) must be positive")

    @property
    def n(self) -> int:
        return self.gains.shape[0]

    @classmethod
    def nominal(cls, n: int, motors: int, body_size: int, device="cpu") -> "MotorTasks":
        """``n`` copies of the nominal system: every gain and physical parameter 1, no failure."""
        gains = torch.ones(n, motors, device=device)
        return cls(gains, torch.full((n,), -1, dtype=torch.long, device=device), gains.clone(),
                   torch.ones(n, body_size, device=device))

    def crippled(self, motors: int | tuple[int, ...], gain: float, step: int) -> "MotorTasks":
        """The same tasks, with the gain of ``motors`` becoming ``gain`` at step ``step`` (0 stops a motor,
        -1 reverses it)."""
        motors = (motors,) if isinstance(motors, int) else tuple(motors)
        if not motors or not all(0 <= m < self.gains.shape[1] for m in motors):
            raise ValueError(f"motors must be indices between 0 and {self.gains.shape[1] - 1}, got {motors}")
        if step < 0:
            raise ValueError(f"the failure step must be >= 0, got {step}")
        fail_gains = self.gains.clone()
        fail_gains[:, list(motors)] = gain
        return replace(self, fail_step=torch.full_like(self.fail_step, step), fail_gains=fail_gains)

    def take(self, index) -> "MotorTasks":
        return MotorTasks(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def sample(cls, n: int, motors: int, generator: torch.Generator, episode_steps: int,
               gain_choices: tuple[float, ...] = (1.0, 1.0, 1.0, 0.0, -1.0), body_range=((0.8, 1.2), (0.8, 1.2)),
               fail_probability: float = 0.5, device="cpu") -> "MotorTasks":
        """The meta-training distribution: physical parameters uniform in ``body_range``, each motor's gain
        drawn from ``gain_choices``, and with probability ``fail_probability`` new gains drawn the same way
        at a uniformly random step of the episode."""
        choices = torch.tensor(gain_choices, device=device)

        def gains():
            return choices[torch.randint(len(gain_choices), (n, motors), generator=generator, device=device)]

        start, after = gains(), gains()
        fails = torch.rand(n, generator=generator, device=device) < fail_probability
        step = torch.randint(1, episode_steps, (n,), generator=generator, device=device)
        lo = torch.tensor([r[0] for r in body_range], device=device)
        hi = torch.tensor([r[1] for r in body_range], device=device)
        body = lo + (hi - lo) * torch.rand(n, len(body_range), generator=generator, device=device)
        return cls(start, torch.where(fails, step, -1), after, body)


# ----------------------------------------------------------------------------- the batched base


class TorchVectorEnv(gymnasium.vector.VectorEnv):
    """A vector environment stepping ``num_envs`` copies as torch tensors, with next-step autoreset.

    Subclasses define ``_reset_state(mask)`` (new states for the copies in ``mask``),
    ``_observe()`` and ``_advance(actions) -> rewards``.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, obs_dim: int, act_dim: int, max_steps: int, device="cpu",
                 obs_bound: float = np.inf, act_bound: float = 1.0) -> None:
        if num_envs < 1 or max_steps < 1:
            raise ValueError(f"num_envs and max_steps must be at least 1, got {num_envs} and {max_steps}")
        self.num_envs, self.max_steps, self.device = num_envs, max_steps, torch.device(device)
        self.single_observation_space = spaces.Box(-obs_bound, obs_bound, (obs_dim,), np.float32)
        self.single_action_space = spaces.Box(-act_bound, act_bound, (act_dim,), np.float32)
        self.observation_space = spaces.Box(-obs_bound, obs_bound, (num_envs, obs_dim), np.float32)
        self.action_space = spaces.Box(-act_bound, act_bound, (num_envs, act_dim), np.float32)
        self.generator = torch.Generator(self.device).manual_seed(0)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)  # steps into the episode
        self._done = torch.zeros(num_envs, dtype=torch.bool, device=self.device)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.generator.manual_seed(seed)
        everything = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self._reset_state(everything)
        self.t.zero_()
        self._done.zero_()
        return self._observe(), {}

    def step(self, actions):
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"actions must have shape {self.action_space.shape}, got {tuple(actions.shape)}")
        restart = self._done.clone()
        rewards = self._advance(actions)  # [B]
        self.t += 1
        if restart.any():  # next-step autoreset: these copies start over and ignore their action
            self._reset_state(restart)
            self.t[restart] = 0
            rewards = torch.where(restart, torch.zeros_like(rewards), rewards)
        truncated = (self.t >= self.max_steps) & ~restart
        self._done = truncated
        terminated = torch.zeros_like(truncated)
        return self._observe(), rewards, terminated, truncated, {}


class MotorVectorEnv(TorchVectorEnv):
    """A :class:`TorchVectorEnv` whose tasks are :class:`MotorTasks` (the pendulum here, MuJoCo in full mode)."""

    motors: int  # actuators whose gains a task sets
    tasks: MotorTasks  # the current tasks, one per copy
    groups: tuple[tuple[int, ...], ...]  # motors that fail together (a joint, a leg)

    def set_tasks(self, tasks: MotorTasks) -> None:
        """Give every copy its task (takes effect at once; the gains switch at ``fail_step``)."""
        if tasks.n != self.num_envs or tasks.gains.shape[1] != self.motors or tasks.body.shape != self.tasks.body.shape:
            raise ValueError(f"need {self.num_envs} tasks with {self.motors} motors and {self.tasks.body.shape[1]} "
                             f"physical parameters, got {tasks.n} with {tasks.gains.shape[1]} and {tasks.body.shape[1]}")
        self.tasks = MotorTasks(*(getattr(tasks, f.name).to(self.device) for f in fields(tasks)))

    def gains_now(self) -> torch.Tensor:
        """Each copy's gains at the current step ``[B, motors]``."""
        failed = (self.tasks.fail_step >= 0) & (self.t >= self.tasks.fail_step)
        return torch.where(failed[:, None], self.tasks.fail_gains, self.tasks.gains)


class MotorPendulum(MotorVectorEnv):
    """``num_envs`` pendulums with ``motors`` motors each (see the module docstring); tasks via :meth:`set_tasks`."""

    def __init__(self, num_envs: int, motors: int = 2, max_steps: int = 200, device="cpu", dt: float = 0.05,
                 max_torque: float = 2.0, max_speed: float = 8.0, init_theta: float = math.pi,
                 init_theta_dot: float = 1.0) -> None:
        if motors < 1:
            raise ValueError(f"motors must be at least 1, got {motors}")
        if not (0 <= init_theta <= math.pi and 0 <= init_theta_dot <= max_speed):
            raise ValueError(f"init_theta must be in [0, pi] and init_theta_dot in [0, max_speed], got {init_theta} "
                             f"and {init_theta_dot}")
        super().__init__(num_envs, 3, motors, max_steps, device, obs_bound=max_speed)
        self.motors, self.dt, self.max_torque, self.max_speed = motors, dt, max_torque, max_speed
        self.init_theta, self.init_theta_dot = init_theta, init_theta_dot  # a reset draws uniformly within +-these
        self.groups = tuple((i,) for i in range(motors))  # motors that fail together: each on its own
        self.tasks = MotorTasks.nominal(num_envs, motors, 2, self.device)
        self.theta = torch.zeros(num_envs, device=self.device)
        self.theta_dot = torch.zeros(num_envs, device=self.device)

    def sample_tasks(self, n: int, generator: torch.Generator) -> MotorTasks:
        """rho(E): mass and length within 20% of 1, gains from {1, 1, 1, 0, -1}, half the episodes fail."""
        return MotorTasks.sample(n, self.motors, generator, self.max_steps, device=self.device)

    def _reset_state(self, mask: torch.Tensor) -> None:
        n = int(mask.sum())
        theta = (torch.rand(n, generator=self.generator, device=self.device) * 2 - 1) * self.init_theta
        theta_dot = (torch.rand(n, generator=self.generator, device=self.device) * 2 - 1) * self.init_theta_dot
        self.theta = self.theta.masked_scatter(mask, theta)
        self.theta_dot = self.theta_dot.masked_scatter(mask, theta_dot)

    def _observe(self) -> torch.Tensor:
        return torch.stack([self.theta.cos(), self.theta.sin(), self.theta_dot], -1)  # [B, 3]

    def torque(self, actions: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """``u = max_torque * sum_i g_i a_i`` for actions clipped to ``[-1, 1]``."""
        return self.max_torque * (gains * actions.clamp(-1, 1)).sum(-1)

    def _advance(self, actions: torch.Tensor) -> torch.Tensor:
        rewards = self.reward(self._observe(), actions)
        u = self.torque(actions, self.gains_now())
        mass, length = self.tasks.body[:, 0], self.tasks.body[:, 1]
        self.theta, self.theta_dot = pendulum_step(self.theta, self.theta_dot, u, mass, length, self.dt,
                                                   self.max_speed)
        return rewards

    def reward(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor | None = None) -> torch.Tensor:
        """Pendulum-v1's reward of ``obs [..., 3]`` and ``actions [..., motors]`` (what a planner maximises)."""
        theta = torch.atan2(obs[..., 1], obs[..., 0])
        effort = self.max_torque * actions.clamp(-1, 1)
        return -(theta**2 + 0.1 * obs[..., 2] ** 2 + 0.001 * (effort**2).sum(-1))


class PointNavigation(TorchVectorEnv):
    """Finn et al.'s 2-D navigation: move a point to a goal; the goal is the task (:meth:`set_goals`)."""

    def __init__(self, num_envs: int, max_steps: int = 100, device="cpu", max_action: float = 0.1) -> None:
        super().__init__(num_envs, 2, 2, max_steps, device, obs_bound=max_steps * max_action, act_bound=max_action)
        self.max_action = max_action
        self.goals = torch.zeros(num_envs, 2, device=self.device)
        self.position = torch.zeros(num_envs, 2, device=self.device)

    @staticmethod
    def sample_goals(n: int, generator: torch.Generator, device="cpu", half_width: float = 0.5) -> torch.Tensor:
        """Goals uniform in the square ``[-half_width, half_width]^2``: ``[n, 2]``."""
        return (torch.rand(n, 2, generator=generator, device=device) * 2 - 1) * half_width

    def set_goals(self, goals: torch.Tensor) -> None:
        if goals.shape != (self.num_envs, 2):
            raise ValueError(f"goals must be [{self.num_envs}, 2], got {tuple(goals.shape)}")
        self.goals = goals.to(self.device, torch.float32)

    def _reset_state(self, mask: torch.Tensor) -> None:
        self.position = torch.where(mask[:, None], torch.zeros_like(self.position), self.position)  # start at 0

    def _observe(self) -> torch.Tensor:
        return self.position.clone()

    def _advance(self, actions: torch.Tensor) -> torch.Tensor:
        self.position = self.position + actions.clamp(-self.max_action, self.max_action)
        return self.reward(None, actions, self.position)

    def reward(self, obs, actions, next_obs: torch.Tensor) -> torch.Tensor:
        return -((next_obs - self.goals) ** 2).sum(-1)


# ----------------------------------------------------------------------------- one copy, NumPy arrays


class SingleEnv(gymnasium.Env):
    """One copy of a :class:`TorchVectorEnv` as an ordinary ``gymnasium.Env`` (NumPy in and out)."""

    metadata = {"render_modes": []}

    def __init__(self, vector: TorchVectorEnv) -> None:
        if vector.num_envs != 1:
            raise ValueError("SingleEnv wraps a vector environment of exactly one copy")
        self.vector = vector
        self.observation_space = vector.single_observation_space
        self.action_space = vector.single_action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.vector.reset(seed=seed)  # without a seed the copy's generator goes on
        return obs[0].cpu().numpy().astype(np.float32), info

    def step(self, action):
        action = np.asarray(action, dtype=np.float32).reshape(1, -1)
        obs, reward, terminated, truncated, info = self.vector.step(action)
        return (obs[0].cpu().numpy().astype(np.float32), float(reward[0]), bool(terminated[0]), bool(truncated[0]),
                info)


def motor_pendulum_env(tasks: MotorTasks | None = None, **kwargs) -> SingleEnv:
    """One motor pendulum as a ``gymnasium.Env`` (``tasks``: a :class:`MotorTasks` of size 1)."""
    vector = MotorPendulum(1, **kwargs)
    if tasks is not None:
        vector.set_tasks(tasks)
    return SingleEnv(vector)


def point_navigation_env(goal=(0.0, 0.0), **kwargs) -> SingleEnv:
    """One 2-D navigation task as a ``gymnasium.Env``."""
    vector = PointNavigation(1, **kwargs)
    vector.set_goals(torch.tensor([goal], dtype=torch.float32))
    return SingleEnv(vector)
