"""Learned optimizers: Andrychowicz et al. (2016), "Learning to learn by gradient descent by gradient descent".

An *optimizer* m with parameters phi (here: a small LSTM) replaces a hand-designed
update rule for an *optimizee* f with parameters theta. In the paper's order:

1. Update rule (eq. 1):          theta_{t+1} = theta_t + g_t
2. The optimizer is recurrent:   [g_t, h_{t+1}] = m(grad_t, h_t, phi),  grad_t = grad_theta f(theta_t)
3. Meta-loss over a horizon T:   L(phi) = E_f [ sum_{t=1..T} w_t f(theta_t) ]   (w_t = 1 in the paper)
4. L is minimised by Adam on phi, backpropagating through the unrolled run. The paper
   drops the second derivatives that flow through grad_t (the dashed edges of its
   computational graph): grad_t is treated as an input, so no Hessian of f is needed.
5. Coordinatewise LSTM: one two-layer LSTM (20 units per layer) with *shared* phi is
   applied to every coordinate of theta separately, each with its own hidden state,
   so the same optimizer works for any number of parameters (coordinates are a batch).
6. Gradient preprocessing (appendix A): x -> (log|x|/p, sgn x) if |x| >= e^-p else
   (-1, e^p x), p = 10 (:func:`metaedu.nn.preprocess.preprocess`, shared with lecture 02).
7. Long runs (100 steps) are trained by truncated backpropagation through time: the run
   is cut into segments of 20 steps; each segment gives one Adam step on phi, and theta
   and the LSTM state are carried over (detached) to the next segment.

Symbols -> names: phi = the parameters of :class:`CoordinatewiseLSTM`; m = its ``forward``;
h_t = ``state``; g_t = ``update``; grad_t = ``grad``; T = ``LearnedOptimizerSettings.horizon``;
the truncation length = ``LearnedOptimizerSettings.unroll``; w_t = ``weights``; p = ``LearnedOptimizerSettings.p``;
dropping second derivatives = ``LearnedOptimizerSettings.second_order=False``.

Optimizees are *runs* (:mod:`metaedu.tasks.optimizees`): a batch of functions, each a pure
function of a flat parameter vector, with ``theta0`` ``[tasks, n_params]`` and
``loss(theta, t)`` -> ``[tasks]`` (``t`` selects the mini-batch of step t).
``QuadraticProblem`` draws the paper's random 10-d quadratics ||W theta - y||^2;
``MLPProblem`` draws runs of a small MLP classifier on scikit-learn's handwritten digits
(standing in for MNIST).

Hand-designed baselines (SGD, NAG, RMSprop, Adam) are PyTorch's own optimizers applied
to the whole batch ``theta`` ``[tasks, n]`` at once; all four are coordinatewise, so the
functions of a batch do not interact. Their learning rates are tuned by a grid on
training functions (:func:`tune_baselines`), as in the paper.

Example::

    s = LearnedOptimizerSettings.quick()
    problem = QuadraticProblem(seed=0)
    opt = CoordinatewiseLSTM.from_settings(s)
    history = meta_train(opt, problem, s, episodes=s.quad_episodes, meta_batch=s.quad_meta_batch)
    losses = optimize_learned(opt, QuadraticProblem(seed=1).sample(100, s.horizon), s.horizon)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from metaedu.checkpoints import resolve
from metaedu.nn.lstm import lstm_cell
from metaedu.nn.preprocess import P, preprocess
from metaedu.runtime import check_settings
from metaedu.tasks.optimizees import ACTIVATIONS, LiveRun, Run
from metaedu.training import History, train

# the hand-designed rules the LSTM is compared with (their own module; part of this module's API)
from metaedu.algorithms.hand_designed import (  # noqa: F401
    BASELINES,
    make_baseline,
    optimize_baseline,
    optimize_baseline_grid,
    tune_baselines,
)

# The optimizees, where lecture 01 reaches them (lo.QuadraticProblem, ...); they live in metaedu.tasks.optimizees.
from metaedu.tasks.optimizees import MLPProblem, QuadraticProblem, QuadraticRun  # noqa: F401
from metaedu.tasks.regression import Quadratics  # noqa: F401

#: Names of the hand-designed baselines, in the paper's order of its figures.


@dataclass
class LearnedOptimizerSettings:
    """Hyper-parameters of the learned optimizer and of the lecture's experiments."""

    hidden: int = 20  # LSTM units per layer (paper: 20)
    layers: int = 2  # stacked LSTM layers (paper: 2)
    preprocess: bool = True  # feed (log|g|/p, sgn g) instead of the raw gradient
    p: float = P  # preprocessing constant p (paper: 10)
    output_scale: float = 0.1  # the LSTM's output is multiplied by this to give g_t
    horizon: int = 100  # T: steps of one optimizee run (paper: 100)
    unroll: int = 20  # truncated BPTT: steps per meta-update (paper: 20)
    second_order: bool = False  # keep d grad_t / d phi (paper drops it: False)
    log_loss: bool = False  # meta-loss on log f(theta_t) instead of f(theta_t) (paper: f)
    meta_lr: float = 1e-3  # Adam learning rate on phi (decayed to zero on a cosine over training)
    clip_grad: float | None = 1.0  # max norm of the meta-gradient (None: no clipping)
    quad_dim: int = 10  # dimension of the quadratics (paper: 10)
    quad_init_std: float = 0.01  # theta_0 ~ N(0, std^2) for quadratics
    quad_episodes: int = 100  # quadratic runs used for meta-training
    quad_meta_batch: int = 128  # quadratics optimised together per run
    quad_test: int = 200  # held-out quadratics for the test curves
    mlp_hidden: tuple[int, ...] = (20,)  # hidden layer sizes of the digits MLP (paper: one of 20)
    mlp_activation: str = "sigmoid"  # activation of the digits MLP (paper: sigmoid)
    mlp_batch: int = 128  # mini-batch size of the optimizee (paper: 128)
    mlp_episodes: int = 40  # MLP runs used for meta-training
    mlp_meta_batch: int = 4  # MLP runs optimised together per run
    mlp_test: int = 32  # held-out MLP runs per test curve
    mlp_tune: int = 16  # training MLP runs used to tune a baseline's learning rate
    tune_functions: int = 64  # training quadratics used to tune a baseline's learning rate
    mlp_train_examples: int = 1200  # the first this many digits train the optimizer (and tune); the rest test it
    lr_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)  # baselines' learning rates tried
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "LearnedOptimizerSettings":
        """A laptop CPU: a training cell in well under a minute.

        The quadratics budget was chosen on 200 validation quadratics (seed 500; the lecture tests on seed
        1000) by the LSTM's mean log10 loss after 100 steps minus tuned Adam's: 60 runs of 64 functions at
        3e-2 gave +0.02 +- 0.10, against +0.32 for 128 functions (twice the time), +0.18 at 5e-2, +0.74 at
        1e-2, and +0.44 to +0.63 for 40, 80 or 100 runs of 64 and 60 or 150 runs of 32 functions: the outcome
        of so short a meta-training varies a lot from one budget to the next. The baselines' rates are tuned
        on 64 quadratics (32 let the choice jump between neighbouring grid rates from one draw to the next)
        and, for each digits network, on 4 training runs; each digits network is tested on 8 runs (lecture
        time: the lecture runs the LSTM and four rules on six networks).
        """
        return cls(meta_lr=3e-2, quad_episodes=60, quad_meta_batch=64, quad_test=200,
                   mlp_episodes=12, mlp_meta_batch=2, mlp_test=8, mlp_tune=4, tune_functions=64)

    @classmethod
    def full(cls) -> "LearnedOptimizerSettings":
        """A GPU, the paper's scale (its Adam learning rate was found by random search)."""
        return cls(meta_lr=1e-2, quad_episodes=2000, quad_meta_batch=128, quad_test=1000,
                   mlp_episodes=2000, mlp_meta_batch=16, mlp_test=128, mlp_tune=64, tune_functions=256,
                   lr_grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0), checkpoint=True)

    def __post_init__(self) -> None:
        check_settings(self, positive=("hidden", "layers", "p", "output_scale", "horizon", "unroll", "meta_lr",
                                       "clip_grad", "quad_dim", "quad_episodes", "quad_meta_batch", "quad_test",
                                       "mlp_hidden", "mlp_batch", "mlp_episodes", "mlp_meta_batch", "mlp_test",
                                       "mlp_tune", "tune_functions", "lr_grid", "mlp_train_examples"),
                       non_negative=("quad_init_std",), choices={"mlp_activation": tuple(ACTIVATIONS)})
        if self.horizon % self.unroll:
            raise ValueError(f"LearnedOptimizerSettings.horizon ({self.horizon}) must be a multiple of the unroll "
                             f"length ({self.unroll}): truncated BPTT cuts a run into whole segments")


# ---------------------------------------------------------------------------
# The coordinatewise LSTM optimizer m(grad_t, h_t, phi)
# ---------------------------------------------------------------------------

State = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (h, c), each [n_coords, hidden]


class CoordinatewiseLSTM(nn.Module):
    """A stacked LSTM applied to each coordinate of theta separately, with shared weights.

    Args:
        hidden: units per LSTM layer (20 in the paper).
        layers: number of stacked LSTM layers (2 in the paper).
        use_preprocess: feed the two preprocessed numbers of appendix A instead of the raw gradient.
        p: the preprocessing constant.
        output_scale: the linear read-out is multiplied by this to give the update g_t.
    Shapes: ``forward(grad [*shape], state)`` -> ``(update [*shape], new state)``; the state holds
    one (h, c) pair ``[n_coords, hidden]`` per layer, ``n_coords = grad.numel()``.
    """

    def __init__(self, hidden: int = 20, layers: int = 2, use_preprocess: bool = True, p: float = P,
                 output_scale: float = 0.1) -> None:
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(f"need hidden >= 1 and layers >= 1, got hidden={hidden}, layers={layers}")
        self.hidden, self.layers = hidden, layers
        self.use_preprocess, self.p, self.output_scale = use_preprocess, p, output_scale
        in_features = 2 if use_preprocess else 1
        self.cells = nn.ModuleList(
            [nn.LSTMCell(in_features if i == 0 else hidden, hidden) for i in range(layers)]
        )
        self.readout = nn.Linear(hidden, 1)

    @classmethod
    def from_settings(cls, s: LearnedOptimizerSettings) -> "CoordinatewiseLSTM":
        return cls(s.hidden, s.layers, s.preprocess, s.p, s.output_scale)

    def init_state(self, n_coords: int) -> State:
        """Zero hidden and cell states for ``n_coords`` coordinates (on phi's device and dtype)."""
        if n_coords < 1:
            raise ValueError(f"the optimizee needs at least one parameter, got {n_coords}")
        w = self.readout.weight
        zeros = lambda: torch.zeros(n_coords, self.hidden, device=w.device, dtype=w.dtype)  # noqa: E731
        return [(zeros(), zeros()) for _ in range(self.layers)]

    def forward(self, grad: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        flat = grad.reshape(-1, 1)  # [n_coords, 1]: each coordinate is one row of the batch
        if state is None:
            state = self.init_state(flat.shape[0])
        if state[0][0].shape[0] != flat.shape[0]:
            raise ValueError(
                f"the LSTM state is for {state[0][0].shape[0]} coordinates but the gradient has {flat.shape[0]}"
            )
        x = preprocess(flat[:, 0], self.p) if self.use_preprocess else flat  # [n_coords, 2] or [n_coords, 1]
        new_state: State = []
        for cell, (h, c) in zip(self.cells, state):
            h, c = lstm_cell(cell, x, (h, c))  # [n_coords, hidden]; = cell(x, (h, c)), faster for many coordinates
            new_state.append((h, c))
            x = h
        update = self.output_scale * self.readout(x)  # [n_coords, 1]
        return update.reshape(grad.shape), new_state


def detach_state(state: State) -> State:
    return [(h.detach(), c.detach()) for h, c in state]


# ---------------------------------------------------------------------------
# Meta-training: unrolled runs and truncated BPTT
# ---------------------------------------------------------------------------


def optimizee_gradient(loss: torch.Tensor, theta: torch.Tensor, second_order: bool) -> torch.Tensor:
    """grad_t = d f(theta_t) / d theta_t, ``[tasks, n]``.

    ``second_order=False`` (the paper) returns it detached: an input to the optimizer, with no
    path back to phi through the optimizee's Hessian.
    """
    (grad,) = torch.autograd.grad(loss.sum(), theta, create_graph=second_order, retain_graph=True)
    return grad if second_order else grad.detach()


def unroll(optimizer: CoordinatewiseLSTM, run: Run, theta: torch.Tensor, state: State | None, t0: int, steps: int,
           second_order: bool = False, weights: torch.Tensor | None = None, log_loss: bool = False):
    """Run the learned optimizer for ``steps`` steps from step ``t0``, keeping the graph to phi.

    Returns ``(meta_loss, theta, state, losses)``: ``meta_loss`` = mean over tasks of
    sum_{t=1..steps} w_t f(theta_t) (w_t = 1 unless ``weights [steps]`` is given), the final
    ``theta [tasks, n]`` and LSTM state (not detached), and ``losses [steps + 1, tasks]``
    (detached) with f(theta_t) before the first and after each step.
    """
    if steps < 1:
        raise ValueError(f"need at least one step to unroll, got {steps}")
    if weights is not None and weights.shape != (steps,):
        raise ValueError(f"weights must have shape ({steps},), got {tuple(weights.shape)}")
    if not theta.requires_grad:
        theta = theta.detach().requires_grad_(True)  # the optimizee's gradient needs a graph from theta
    loss = run.loss(theta, t0)  # [tasks]: f(theta_0)
    losses = [loss.detach()]
    meta_loss = theta.new_zeros(())
    for k in range(steps):
        grad = optimizee_gradient(loss, theta, second_order)  # [tasks, n]
        update, state = optimizer(grad, state)  # g_t [tasks, n]
        theta = theta + update  # theta_{t+1} = theta_t + g_t
        loss = run.loss(theta, t0 + k + 1)  # f(theta_{t+1}) [tasks]
        w = 1.0 if weights is None else weights[k]
        term = loss.clamp_min(1e-12).log() if log_loss else loss  # [tasks]
        meta_loss = meta_loss + w * term.mean()
        losses.append(loss.detach())
    return meta_loss, theta, state, torch.stack(losses)


def meta_train(optimizer: CoordinatewiseLSTM, problem, s: LearnedOptimizerSettings, episodes: int, meta_batch: int,
               progress: bool = True, checkpoint=None, desc: str = "meta-training",
               max_seconds: float | None = None) -> History:
    """Train phi with Adam by truncated BPTT: ``episodes`` runs of ``s.horizon`` steps, one
    meta-update every ``s.unroll`` steps (so ``episodes * horizon / unroll`` updates in all).

    Each run is a fresh batch of ``meta_batch`` functions from ``problem.sample``. History logs the
    segment's mean loss per step (``loss``) and the run's final loss (``final``, at run ends).
    ``checkpoint``: see :func:`metaedu.checkpoints.resolve` (``None``: as ``s.checkpoint`` says).
    ``max_seconds``: stop after the meta-update that uses up this much time (``history.steps_done`` says how many).
    """
    if s.horizon % s.unroll != 0:
        raise ValueError(f"the horizon ({s.horizon}) must be a multiple of the unroll length ({s.unroll})")
    checkpoint = resolve(checkpoint, "learned_optimizer", s, optimizer, problem.checkpoint_inputs(), episodes,
                         meta_batch)
    segments = s.horizon // s.unroll
    adam = torch.optim.Adam(optimizer.parameters(), lr=s.meta_lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(adam, T_max=episodes * segments)
    live = LiveRun(problem.device)

    def step(i: int) -> dict:
        k = i % segments
        if k == 0 or live.run is None:  # a new batch of functions, theta_0 and a zero LSTM state
            live.start(problem.sample(meta_batch, s.horizon))
            k = 0
        meta_loss, theta, state, losses = unroll(
            optimizer, live.run, live.theta, live.state, k * s.unroll, s.unroll, s.second_order,
            log_loss=s.log_loss,
        )
        adam.zero_grad()
        (meta_loss / s.unroll).backward()
        if s.clip_grad:
            nn.utils.clip_grad_norm_(optimizer.parameters(), s.clip_grad)
        adam.step()
        schedule.step()
        live.theta, live.state = theta.detach(), detach_state(state)  # truncation: no gradient across segments
        metrics = {"loss": meta_loss.detach() / s.unroll}
        if k == segments - 1:
            metrics["final"] = losses[-1].mean()
        return metrics

    state = {"optimizer": optimizer, "adam": adam, "schedule": schedule, "problem": problem, "live": live}
    return train(step, episodes * segments, state=state, checkpoint=checkpoint, progress=progress, desc=desc,
                 max_seconds=max_seconds)


# ---------------------------------------------------------------------------
# Testing optimizers on new functions
# ---------------------------------------------------------------------------


def optimize_learned(optimizer: CoordinatewiseLSTM, run: Run, steps: int, return_thetas: bool = False):
    """Optimise a run with the trained LSTM (no graph to phi); losses ``[steps + 1, tasks]``.

    With ``return_thetas`` also the iterates ``[steps + 1, tasks, n]``.
    """
    theta, state = run.theta0.detach(), None
    losses, thetas = [], [theta]
    for t in range(steps + 1):
        theta = theta.detach().requires_grad_(True)
        loss = run.loss(theta, t)  # [tasks]
        losses.append(loss.detach())
        if t == steps:
            break
        (grad,) = torch.autograd.grad(loss.sum(), theta)
        with torch.no_grad():
            update, state = optimizer(grad, state)
            theta = theta + update
        thetas.append(theta.detach())
    out = torch.stack(losses)
    return (out, torch.stack(thetas)) if return_thetas else out


@dataclass
class Comparison:
    """Loss curves ``[steps + 1, tasks]`` of several optimizers on the same test functions."""

    curves: dict[str, torch.Tensor]
    lrs: dict[str, float] = field(default_factory=dict)

    def final(self, name: str) -> torch.Tensor:
        return self.curves[name][-1]

    def median_final(self, name: str) -> float:
        return float(self.final(name).median())


def compare(optimizer: CoordinatewiseLSTM, run: Run, steps: int, lrs: dict[str, float]) -> Comparison:
    """The LSTM and each tuned baseline on the same test run."""
    curves = {"LSTM": optimize_learned(optimizer, run, steps)}
    for name, lr in lrs.items():
        curves[name] = optimize_baseline(name, lr, run, steps)
    return Comparison(curves, dict(lrs))


@torch.no_grad()
def update_response(optimizer: CoordinatewiseLSTM, grads: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """What the learned update looks like: feed each value of ``grads [n]`` as a constant gradient
    for ``steps`` steps from a zero state; return the updates ``[steps, n]`` (one coordinate per value)."""
    state, out = None, []
    for _ in range(steps):
        update, state = optimizer(grads, state)
        out.append(update)
    return torch.stack(out)
