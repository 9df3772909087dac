"""Lecture 10's full mode within a time budget: GrBAL vs MB (and MB + dynamic evaluation) on a MuJoCo robot
whose joint (HalfCheetah) or leg (Ant) fails in the middle of a test episode (Nagabandi et al. 2019).

The settings are ``GrBALSettings.full()`` (the paper's model, segments, planner and data collection)
with the robot chosen by ``--robot``. Within ``--seconds`` of wall time it

1. times a few planning steps of each method on the test robots, to know what the test will cost;
2. trains MB and GrBAL (Alg. 1, each on its own data) for equal shares of what the test leaves;
3. runs the same crippled test episodes for MB, MB + dynamic evaluation (MB's model) and GrBAL, the
   failure half-way through (the test episodes are shortened if full-length ones would not fit);
4. measures GrBAL's prediction error before and after adapting, after the failure.

It prints each step and writes everything to ``--out/rl_full_mode.json``: the settings, steps reached and
their pace (hours a whole full run would take), every episode's return after the failure, paired
verdicts, MuJoCo steps per second. Needs ``gymnasium`` and ``mujoco`` (``pip install -e ".[rl-full]"``).
MuJoCo runs on the CPU; the models and the planner run on ``--device``. On a CPU, smoke-test it small:

    python benchmarks/rl_full_mode.py --seconds 30 --candidates 50 --hidden 64 --test-episodes 2 \
        --test-steps 40 --out /tmp/rl_full
    python benchmarks/rl_full_mode.py --device cuda --seconds 240 --out results/    # the GPU run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from metaedu.evaluation import mean_ci
from metaedu.rl import grbal_experiment as gx
from metaedu.rl.grbal import NAMES, AdaptiveMPC, GrBALSettings, build
from metaedu.rl.mujoco_envs import mujoco_available
from metaedu.rl.rollout import random_controller, rollout
from metaedu.runtime import get_device
from metaedu.verdicts import paired

PROBE_STEPS = 5  # planning steps timed per method before training


def probe_seconds_per_step(settings: GrBALSettings, device, methods=("mb", "mb_de", "grbal")) -> float:
    """Wall seconds of one test step of all ``methods`` together (untrained models, ``test_episodes`` copies)."""
    env = gx.make_env(settings, settings.test_episodes, device, test=True)
    obs_dim, act_dim = env.single_observation_space.shape[0], env.single_action_space.shape[0]
    total = 0.0
    for method in methods:
        model = build(method, settings, obs_dim, act_dim).to(env.device)
        env.set_tasks(gx.crippled_tasks(env, settings))
        controller = AdaptiveMPC(method, model, env, settings, torch.Generator(env.device).manual_seed(0))
        rollout(env, controller, 2, seed=0)  # warm-up (CUDA kernels, allocator)
        begin = time.perf_counter()
        rollout(env, controller, PROBE_STEPS, seed=0)
        total += (time.perf_counter() - begin) / PROBE_STEPS
    env.close()
    return total


def env_steps_per_second(settings: GrBALSettings, device, steps: int = 200) -> float:
    """MuJoCo steps per second of wall time with random actions (``collect_episodes`` copies)."""
    env = gx.make_env(settings, settings.collect_episodes, device)
    gen = torch.Generator(env.device).manual_seed(0)
    begin = time.perf_counter()
    rollout(env, random_controller(env.single_action_space.shape[0], gen), min(steps, env.max_steps), seed=0)
    seconds = time.perf_counter() - begin
    env.close()
    return env.num_envs * min(steps, env.max_steps) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="half_cheetah", choices=("half_cheetah", "ant"))
    parser.add_argument("--seconds", type=float, default=240.0, help="wall-time budget of the whole run")
    parser.add_argument("--out", required=True, help="folder for rl_full_mode.json")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=4, help="torch CPU threads")
    parser.add_argument("--test-episodes", type=int, default=None, help="default: the full preset's")
    parser.add_argument("--test-steps", type=int, default=None,
                        help="length of a test episode (default: the preset's, shortened to fit the budget)")
    parser.add_argument("--candidates", type=int, default=None, help="n_A (default: the full preset's)")
    parser.add_argument("--hidden", type=int, default=None, help="width of both hidden layers (default: 512)")
    args = parser.parse_args()
    if not mujoco_available():
        raise SystemExit("this benchmark needs gymnasium and mujoco: pip install -e '.[rl-full]'")
    if args.seconds <= 0:
        raise SystemExit(f"--seconds must be positive, got {args.seconds}")
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or str(device)
    overrides = {"env": args.robot, "checkpoint": False}
    if args.test_episodes:
        overrides["test_episodes"] = args.test_episodes
    if args.candidates:
        overrides["candidates"] = args.candidates
    if args.hidden:
        overrides["hidden"] = (args.hidden, args.hidden)
    settings = replace(GrBALSettings.full(), **overrides)
    print(f"device: {name}; robot {args.robot}; budget {args.seconds:.0f} s", flush=True)

    per_step = probe_seconds_per_step(settings, device)
    test_steps = args.test_steps or settings.episode_steps
    if args.test_steps is None:  # the test may take at most 40% of the budget
        test_steps = max(64, min(test_steps, int(0.4 * args.seconds / (per_step * 1.3))))
    test = replace(settings, episode_steps=test_steps, fail_step=test_steps // 2)
    sps = env_steps_per_second(settings, device)
    print(f"one test step of the three methods: {per_step:.3f} s; test episodes of {test_steps} steps "
          f"(failure at {test.fail_step}); MuJoCo {sps:.0f} steps/s", flush=True)

    left = args.seconds - (time.perf_counter() - started) - 1.3 * per_step * test_steps
    models, training = {}, {}
    for method in ("mb", "grbal"):
        budget = max(left / 2, 1.0)
        model, history = gx.train_model(method, settings, seed=args.seed, device=device, progress=False,
                                        max_seconds=budget)
        models[method] = model
        done = max(history.steps_done, 1)
        training[method] = {"steps_done": history.steps_done, "steps_full": settings.steps,
                            "seconds": history.seconds, "episodes_in_data": model.data.episodes,
                            "hours_for_full_run": history.seconds / done * settings.steps / 3600}
        print(f"{NAMES[method]}: {history.steps_done} of {settings.steps} steps in {history.seconds:.0f} s "
              f"({model.data.episodes} episodes in D; a whole run at this pace: "
              f"{training[method]['hours_for_full_run']:.1f} h)", flush=True)
    models["mb_de"] = models["mb"]

    begin = time.perf_counter()
    runs = gx.crippled_test({m: models[m] for m in ("mb", "mb_de", "grbal")}, test, seed=args.seed, device=device)
    after = {m: r.returns(test.fail_step).cpu() for m, r in runs.items()}
    before = {m: r.returns(0, test.fail_step).cpu() for m, r in runs.items()}
    test_seconds = time.perf_counter() - begin
    verdicts = [paired("GrBAL", after["grbal"], NAMES[m], after[m], "return after the failure") for m in ("mb", "mb_de")]
    for m in ("mb", "mb_de", "grbal"):
        print(f"{NAMES[m]}: return before the failure {mean_ci(before[m], '')}, after {mean_ci(after[m], '')}")
    for v in verdicts:
        print(v.sentence(), flush=True)
    errors = None
    if test_steps - test.fail_step >= test.past + test.future:
        err_before, err_after = gx.prediction_errors(models["grbal"], runs["grbal"], test, start=test.fail_step)
        errors = {"before": err_before.cpu().tolist(), "after": err_after.cpu().tolist(),
                  "verdict": paired("theta'", err_after.cpu(), "theta", err_before.cpu(),
                                    "GrBAL's prediction error after the failure", higher_is_better=False).as_dict()}
        print(f"GrBAL's prediction error after the failure: {err_before.mean():.4f} before adapting, "
              f"{err_after.mean():.4f} after", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "rl_full_mode", "robot": args.robot, "device": name, "torch": torch.__version__,
        "budget_seconds": args.seconds, "wall_seconds": time.perf_counter() - started, "seed": args.seed,
        "settings": {k: v for k, v in asdict(settings).items()}, "test_steps": test_steps,
        "fail_step": test.fail_step, "fail_group": test.fail_group, "fail_gain": test.fail_gain,
        "probe_seconds_per_test_step": per_step, "test_seconds": test_seconds, "mujoco_steps_per_second": sps,
        "training": training,
        "return_before_failure": {m: v.tolist() for m, v in before.items()},
        "return_after_failure": {m: v.tolist() for m, v in after.items()},
        "verdicts": [v.as_dict() for v in verdicts], "prediction_error": errors,
    }
    (out / "rl_full_mode.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out / 'rl_full_mode.json'} after {record['wall_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
