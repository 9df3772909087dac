"""Meta-reinforcement learning (lecture 10): environments whose dynamics change, and four methods.

* :mod:`metaedu.rl.envs`, :mod:`metaedu.rl.mujoco_envs`: the motor pendulum and 2-D navigation
  (batched in torch, behind gymnasium's interfaces), MuJoCo's HalfCheetah and Ant for full mode;
* :mod:`metaedu.rl.dynamics`, :mod:`metaedu.rl.mpc`, :mod:`metaedu.rl.grbal`,
  :mod:`metaedu.rl.grbal_experiment`: model-based meta-RL for online adaptation, GrBAL and
  ReBAL with the MB and MB + dynamic evaluation baselines (Nagabandi et al. 2019);
* :mod:`metaedu.rl.maml_rl`: MAML with a policy-gradient inner loop (Finn et al. 2017);
* :mod:`metaedu.rl.mql`: Meta-Q-Learning (Fakoor et al. 2020);
* :mod:`metaedu.rl.curiosity`: a small search over curiosity modules (Alet et al. 2020).
"""
