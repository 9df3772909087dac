"""Environment steps per second: lecture 10's batched torch environments against one copy at a time.

For the motor pendulum and the 2-D navigation, prints the steps per second (copies x steps / CPU
seconds) of the vector environment with B copies stepped together, of the single ``gymnasium.Env``
version stepped B times in a Python loop, and their ratio; with ``mujoco`` installed, the same
for MuJoCo's HalfCheetah (whose copies are stepped one after another behind the same interface),
beside gymnasium's own ``HalfCheetah-v5``. Before timing, the batch and the single copies are run
on the same actions and compared (the script stops if they differ)::

    METAEDU_THREADS=1 python benchmarks/rl_env_speed.py            # CPU
    python benchmarks/rl_env_speed.py --device cuda --copies 4096   # the torch environments on a GPU

Times are process CPU time on the CPU (a shared machine inflates wall time) and wall time on CUDA
(after synchronising).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from metaedu.rl.envs import MotorPendulum, PointNavigation, SingleEnv
from metaedu.rl.mujoco_envs import MujocoMotorEnv, mujoco_available
from metaedu.runtime import get_device, set_threads


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def batched_rate(env, steps: int) -> float:
    env.reset(seed=0)
    gen = torch.Generator(env.device).manual_seed(0)
    act = env.single_action_space.shape[0]
    high = float(env.single_action_space.high[0])
    actions = (torch.rand(steps, env.num_envs, act, generator=gen, device=env.device) * 2 - 1) * high
    start = clock(env.device)
    for t in range(steps):
        env.step(actions[t])
    return env.num_envs * steps / (clock(env.device) - start)


def single_rate(make, copies: int, steps: int) -> float:
    envs = [make() for _ in range(copies)]
    for e in envs:
        e.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = [[rng.uniform(e.action_space.low, e.action_space.high).astype(np.float32)
                for e in envs] for _ in range(steps)]
    start = time.process_time()
    for t in range(steps):
        for e, a in zip(envs, actions[t]):
            e.step(a)
    return copies * steps / (time.process_time() - start)


def check_agreement(copies: int = 8, steps: int = 20) -> None:
    """The batch and single copies started alike and given the same actions end in the same states."""
    batch = MotorPendulum(copies, max_steps=steps)
    batch.reset(seed=1)
    singles = [SingleEnv(MotorPendulum(1, max_steps=steps)) for _ in range(copies)]
    for i, s in enumerate(singles):
        s.reset(seed=0)
        s.vector.theta, s.vector.theta_dot = batch.theta[i:i + 1].clone(), batch.theta_dot[i:i + 1].clone()
    actions = torch.rand(steps, copies, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    for t in range(steps):
        obs = batch.step(actions[t])[0]
        single = np.stack([s.step(actions[t, i].numpy())[0] for i, s in enumerate(singles)])
    if not np.allclose(obs.numpy(), single, atol=1e-5):
        raise SystemExit("the batched pendulum and the single copies disagree: not timing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--copies", type=int, default=1024, help="copies of the batched torch environments")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    set_threads()
    device = get_device(args.device)
    check_agreement()
    loop_copies = 16  # the Python loop is slow: fewer copies, the rate is per step anyway
    rows = [
        ("motor pendulum", batched_rate(MotorPendulum(args.copies, max_steps=args.steps, device=device), args.steps),
         single_rate(lambda: SingleEnv(MotorPendulum(1, max_steps=args.steps)), loop_copies, args.steps)),
        ("2-D navigation", batched_rate(PointNavigation(args.copies, args.steps, device), args.steps),
         single_rate(lambda: SingleEnv(PointNavigation(1, args.steps)), loop_copies, args.steps)),
    ]
    print(f"device {device}, {torch.get_num_threads()} thread(s); batched: {args.copies} copies, "
          f"one at a time: {loop_copies} copies in a Python loop; {args.steps} steps")
    print(f"{'environment':<28}{'batched steps/s':>18}{'one at a time':>16}{'ratio':>9}")
    for name, batched, single in rows:
        print(f"{name:<28}{batched:>18,.0f}{single:>16,.0f}{batched / single:>8.0f}x")
    if mujoco_available():
        import gymnasium

        ours = batched_rate(MujocoMotorEnv("half_cheetah", 8, args.steps), args.steps)
        theirs = single_rate(lambda: gymnasium.make("HalfCheetah-v5"), 8, args.steps)
        print(f"{'HalfCheetah (ours, 8 copies)':<28}{ours:>18,.0f}{theirs:>16,.0f}{ours / theirs:>8.2f}x"
              "   (one at a time = gymnasium's HalfCheetah-v5)")
    else:
        print("HalfCheetah: mujoco is not installed (pip install -e '.[rl-full]')")


if __name__ == "__main__":
    main()
