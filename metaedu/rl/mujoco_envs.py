"""Full mode's environments: gymnasium's MuJoCo HalfCheetah and Ant with motors that fail (Nagabandi et al. 2019).

Needs the ``mujoco`` package (``pip install -e ".[rl-full]"``). The same :class:`MotorTasks` as the
motor pendulum set, for every copy, a gain per actuator (multiplying MuJoCo's actuator gear),
when they change, and a body parameter (a scale of every joint's damping):

* ``half_cheetah`` (``HalfCheetah-v5``), the paper's "disabled joint": during meta-training one of
  the six joints, drawn at random, is disabled (gain 0) from the start or from a random step on;
* ``ant`` (``Ant-v5`` without contact forces in the observation and without early termination, so
  every episode has the same length), the paper's "crippled leg": the two motors of one of the
  four legs stop together.

The copies are stepped one after another (MuJoCo runs on the CPU) behind the same
:class:`~metaedu.rl.envs.MotorVectorEnv` interface as the torch environments, so GrBAL's code
does not know which one it drives. :meth:`MujocoMotorEnv.reward` is the environment's reward
written on observations (for the planner): forward velocity, minus the control cost, plus Ant's
healthy bonus (Ant's small contact cost is left out).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from metaedu.rl.envs import MotorTasks, MotorVectorEnv

#: name -> (gymnasium id, make() keyword arguments, motors that fail together, velocity index in obs,
#: control cost weight, healthy bonus)
ROBOTS = {
    "half_cheetah": ("HalfCheetah-v5", {}, tuple((j,) for j in range(6)), 8, 0.1, 0.0),
    "ant": ("Ant-v5", {"terminate_when_unhealthy": False, "include_cfrc_ext_in_observation": False},
            ((0, 1), (2, 3), (4, 5), (6, 7)), 13, 0.5, 1.0),
}


def mujoco_available() -> bool:
    """Whether the ``mujoco`` package (the ``rl-full`` extra) is installed."""
    return importlib.util.find_spec("mujoco") is not None


class MujocoMotorEnv(MotorVectorEnv):
    """``num_envs`` MuJoCo robots (``"half_cheetah"`` or ``"ant"``) whose actuator gains follow :class:`MotorTasks`."""

    def __init__(self, robot: str, num_envs: int, max_steps: int = 1000, device="cpu",
                 damping_range: tuple[float, float] = (0.8, 1.2)) -> None:
        if robot not in ROBOTS:
            raise ValueError(f"robot must be one of {sorted(ROBOTS)}, got {robot!r}")
        if not mujoco_available():
            raise ImportError(f"the {robot} environment needs MuJoCo: pip install -e '.[rl-full]'")
        import gymnasium

        env_id, kwargs, self.groups, self.velocity_index, self.ctrl_cost, self.healthy = ROBOTS[robot]
        self.envs = [gymnasium.make(env_id, **kwargs).unwrapped for _ in range(num_envs)]
        first = self.envs[0]
        obs_dim, act_dim = first.observation_space.shape[0], first.action_space.shape[0]
        super().__init__(num_envs, obs_dim, act_dim, max_steps, device)
        self.robot, self.motors, self.damping_range = robot, act_dim, damping_range
        self.base_gear = first.model.actuator_gear[:, 0].copy()
        self.base_damping = first.model.dof_damping.copy()
        self.tasks = MotorTasks.nominal(num_envs, act_dim, 1, self.device)
        self._obs = np.zeros((num_envs, obs_dim), dtype=np.float32)

    def sample_tasks(self, n: int, generator: torch.Generator) -> MotorTasks:
        """rho(E): one group of motors (a joint, a leg) disabled, from the start or from a random step on;
        the damping scaled uniformly within ``damping_range``."""
        d = self.device
        group = torch.randint(len(self.groups), (n,), generator=generator, device=d)
        member = torch.zeros(len(self.groups), self.motors, device=d)  # [groups, motors]: 1 where a motor belongs
        for g, motors in enumerate(self.groups):
            member[g, list(motors)] = 1.0
        disabled = 1.0 - member[group]  # [n, motors]
        from_start = torch.rand(n, generator=generator, device=d) < 0.5
        step = torch.randint(1, self.max_steps, (n,), generator=generator, device=d)
        healthy = torch.ones_like(disabled)
        lo, hi = self.damping_range
        body = lo + (hi - lo) * torch.rand(n, 1, generator=generator, device=d)
        return MotorTasks(torch.where(from_start[:, None], disabled, healthy), torch.where(from_start, -1, step),
                          disabled, body)

    def _reset_state(self, mask: torch.Tensor) -> None:
        for i in torch.nonzero(mask).flatten().tolist():
            seed = int(torch.randint(2**31, (1,), generator=self.generator, device=self.device))
            self._obs[i] = self.envs[i].reset(seed=seed)[0]

    def _observe(self) -> torch.Tensor:
        return torch.as_tensor(self._obs, device=self.device).clone()

    def _advance(self, actions: torch.Tensor) -> torch.Tensor:
        gains = self.gains_now().cpu().numpy()
        damping = self.tasks.body[:, 0].cpu().numpy()
        acts = actions.clamp(-1, 1).cpu().numpy()
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        for i, env in enumerate(self.envs):
            env.model.actuator_gear[:, 0] = self.base_gear * gains[i]
            env.model.dof_damping[:] = self.base_damping * damping[i]
            obs, rewards[i], _, _, _ = env.step(acts[i])
            self._obs[i] = obs
        return torch.as_tensor(rewards, device=self.device)

    def reward(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """Forward velocity of ``next_obs`` minus the control cost (plus Ant's healthy bonus while 0.2 <= z <= 1)."""
        r = next_obs[..., self.velocity_index] - self.ctrl_cost * (actions.clamp(-1, 1) ** 2).sum(-1)
        if self.healthy:
            z = next_obs[..., 0]
            r = r + self.healthy * ((z >= 0.2) & (z <= 1.0)).float()
        return r

    def close(self, **kwargs) -> None:
        for env in self.envs:
            env.close()
