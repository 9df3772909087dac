"""Alg. 1 (meta-training with data collection) and the paper's experiment: a motor fails during a test episode.

:func:`train_model` runs Alg. 1 for one method on its own data; :func:`crippled_test` runs the four
methods on the same test episodes (same starts, same failure) and returns their trajectories;
:func:`prediction_errors` measures GrBAL's model before and after adapting to the last M steps;
:func:`tune_dynamic_evaluation` picks MB + dynamic evaluation's step size on validation episodes
(tasks drawn from rho(E) with other seeds, never the test episodes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metaedu.checkpoints import resolve
from metaedu.nn.functional import batched_forward, parameter_dict, per_task
from metaedu.rl.dynamics import SegmentBuffer
from metaedu.rl.envs import MotorPendulum, MotorTasks, MotorVectorEnv
from metaedu.rl.grbal import GrBAL, AdaptiveMPC, GrBALSettings, NAMES, build, normaliser_of, training_loss
from metaedu.rl.mujoco_envs import MujocoMotorEnv
from metaedu.rl.rollout import Trajectories, random_controller, rollout
from metaedu.training import History, train

#: Seeds of validation episodes are offset by this much from the caller's seed (test episodes use the seed itself).
VALIDATION_OFFSET = 10_000


def make_env(settings: GrBALSettings, num_envs: int, device="cpu", test: bool = False) -> MotorVectorEnv:
    """The settings' environment with ``num_envs`` copies (a test pendulum starts near upright)."""
    if settings.env == "motor_pendulum":
        start = settings.start_angle if test else math.pi
        return MotorPendulum(num_envs, max_steps=settings.episode_steps, device=device, init_theta=start)
    return MujocoMotorEnv(settings.env, num_envs, settings.episode_steps, device)


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**31, (1,), generator=generator, device=generator.device))


def train_model(method: str, settings: GrBALSettings, seed: int = 0, device="cpu", checkpoint=None,
                progress: bool = True, max_seconds: float | None = None) -> tuple[nn.Module, History]:
    """Alg. 1 for ``method``: D starts with ``random_episodes`` episodes of random actions on tasks from
    rho(E) (the environment's ``sample_tasks``); then ``steps`` gradient steps, and every
    ``collect_every`` steps ``collect_episodes`` new episodes run by the current adaptive controller.

    MB + dynamic evaluation trains as MB. ``max_seconds`` stops training early (a time budget for a
    benchmark; ``history.steps_done`` says how far it got). Returns the model and the history; the
    data set D is ``model.data`` (a :class:`~metaedu.rl.dynamics.SegmentBuffer`).
    """
    method = "mb" if method == "mb_de" else method
    checkpoint = resolve(checkpoint, f"grbal_{method}", settings, seed)
    batch = settings.random_episodes if settings.env == "motor_pendulum" else settings.collect_episodes
    env = make_env(settings, batch, device)  # torch copies are cheap: all random episodes in one batch
    obs_dim, act_dim = env.single_observation_space.shape[0], env.single_action_space.shape[0]
    low, high = float(env.single_action_space.low[0]), float(env.single_action_space.high[0])
    model = build(method, settings, obs_dim, act_dim, seed).to(env.device)
    generator = torch.Generator(env.device).manual_seed(seed)
    buffer = SegmentBuffer()
    while buffer.episodes < settings.random_episodes:
        env.set_tasks(env.sample_tasks(env.num_envs, generator))
        buffer.add(rollout(env, random_controller(act_dim, generator, low, high), seed=_seed(generator)))
    normaliser_of(model).fit(*buffer.transitions())
    collector = make_env(settings, settings.collect_episodes, device) if settings.collect_every else None
    opt = torch.optim.Adam(parameter_groups(model, settings))

    def step(i: int) -> dict:
        if collector is not None and i and i % settings.collect_every == 0:  # Alg. 1, lines 3-6
            collector.set_tasks(collector.sample_tasks(collector.num_envs, generator))
            controller = AdaptiveMPC(method, model, collector, settings, generator)
            buffer.add(rollout(collector, controller, seed=_seed(generator)))
        loss = training_loss(method, model, buffer, settings, generator)  # lines 8-12
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()  # lines 13-14
        return {"loss": loss.detach()}

    state = {"model": model, "opt": opt, "buffer": buffer, "generator": generator}
    history = train(step, settings.steps, state=state, checkpoint=checkpoint, progress=progress,
                    desc=NAMES[method], max_seconds=max_seconds)
    model.data = buffer
    return model, history


def train_all(settings: GrBALSettings, seed: int = 0, device="cpu", progress: bool = True):
    """MB, GrBAL and ReBAL trained by :func:`train_model` (each on its own data); MB + dynamic evaluation
    uses MB's model. Returns ``({method: model}, {method: history})``."""
    models, histories = {}, {}
    for method in ("mb", "grbal", "rebal"):
        models[method], histories[method] = train_model(method, settings, seed, device, progress=progress)
    models["mb_de"] = models["mb"]
    return {m: models[m] for m in ("mb", "mb_de", "grbal", "rebal")}, histories


def parameter_groups(model: nn.Module, settings: GrBALSettings) -> list[dict]:
    """theta with Adam step beta; GrBAL's psi with its own step eta."""
    if not isinstance(model, GrBAL):
        return [{"params": list(model.parameters()), "lr": settings.outer_lr}]
    psi = list(model.learner.inner_lrs.parameters())
    return [{"params": list(model.dynamics.parameters()), "lr": settings.outer_lr},
            {"params": psi, "lr": settings.psi_lr}]


# ----------------------------------------------------------------------------- the test


def crippled_tasks(env: MotorVectorEnv, settings: GrBALSettings, group: int | None = None, gain: float | None = None,
                   fail_step: int | None = None) -> MotorTasks:
    """Nominal tasks for every copy of ``env`` whose motor group fails at ``fail_step`` (settings' by default)."""
    group = settings.fail_group if group is None else group
    if not 0 <= group < len(env.groups):
        raise ValueError(f"group must be between 0 and {len(env.groups) - 1}, got {group}")
    nominal = MotorTasks.nominal(env.num_envs, env.motors, env.tasks.body.shape[1], env.device)
    return nominal.crippled(env.groups[group], settings.fail_gain if gain is None else gain,
                            settings.fail_step if fail_step is None else fail_step)


def run_episodes(method: str, model: nn.Module, env: MotorVectorEnv, tasks: MotorTasks, settings: GrBALSettings,
                 seed: int, de_lr: float | None = None) -> Trajectories:
    """One episode per copy of ``env`` with ``method``'s adaptive controller; the same ``seed`` gives every
    method the same starts (and the same planner noise)."""
    env.set_tasks(tasks)
    controller = AdaptiveMPC(method, model, env, settings, torch.Generator(env.device).manual_seed(seed), de_lr)
    return rollout(env, controller, settings.episode_steps, seed=seed)


def crippled_test(models: dict[str, nn.Module], settings: GrBALSettings, seed: int = 0, device="cpu",
                  group: int | None = None, gain: float | None = None, fail_step: int | None = None,
                  episodes: int | None = None, de_lr: float | None = None) -> dict[str, Trajectories]:
    """The same ``episodes`` test episodes (default ``test_episodes``) for every method in ``models``
    (keys of :data:`~metaedu.rl.grbal.METHODS`), a motor failing in the middle of each."""
    env = make_env(settings, episodes or settings.test_episodes, device, test=True)
    tasks = crippled_tasks(env, settings, group, gain, fail_step)
    return {m: run_episodes(m, model, env, tasks, settings, seed, de_lr) for m, model in models.items()}


@torch.no_grad()
def prediction_errors(model: GrBAL, trajectories: Trajectories, settings: GrBALSettings, start: int,
                      stride: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """GrBAL's error on the next K steps before (theta) and after (theta') adapting to the M steps before them.

    Windows begin every ``stride`` steps from ``start + M`` on; the error is the mean squared error of the
    predicted normalised state change. Returns two tensors ``[B]`` (one mean per episode).
    """
    m, k = settings.past, settings.future
    times = list(range(start + m, trajectories.steps - k + 1, stride))
    if not times:
        raise ValueError(f"no window of M + K = {m + k} steps fits between step {start} and the end of the episodes")
    norm = model.dynamics.norm
    device = trajectories.obs.device
    t = torch.tensor(times, device=device)[:, None] + torch.arange(-m, k, device=device)  # [W, M + K]
    obs, act, nxt = trajectories.obs[:, t], trajectories.actions[:, t], trajectories.obs[:, t + 1]  # [B, W, M + K, .]
    b, w = obs.shape[:2]
    x, y = norm.inputs(obs, act).flatten(0, 1), norm.targets(obs, nxt).flatten(0, 1)  # [B * W, M + K, .]
    with torch.enable_grad():
        fast = {n: p.detach() for n, p in model.adapt(x[:, :m], y[:, :m]).items()}
    net, d = model.dynamics.net, y.shape[-1]
    before = batched_forward(net, per_task(parameter_dict(net), b * w), x[:, m:])[..., :d]
    after = batched_forward(net, fast, x[:, m:])[..., :d]

    def per_episode(pred):
        return ((pred - y[:, m:]) ** 2).mean((1, 2)).view(b, w).mean(1)

    return per_episode(before), per_episode(after)


def tune_dynamic_evaluation(model: nn.Module, settings: GrBALSettings, grid: tuple[float, ...], seed: int = 0,
                            device="cpu") -> dict[float, float]:
    """Mean return of MB + dynamic evaluation for each step size in ``grid`` on validation episodes
    (tasks drawn from rho(E), seeds offset by :data:`VALIDATION_OFFSET`)."""
    env = make_env(settings, settings.test_episodes, device, test=True)
    tasks = env.sample_tasks(env.num_envs, torch.Generator(env.device).manual_seed(seed + VALIDATION_OFFSET))
    return {lr: float(run_episodes("mb_de", model, env, tasks, settings, seed + VALIDATION_OFFSET, lr).returns().mean())
            for lr in grid}
