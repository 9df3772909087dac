"""The meta-learner LSTM of Ravi & Larochelle (2017), "Optimization as a model for few-shot learning".

A learner (a small CNN classifier with parameters theta) is trained on one episode's
D_train (our support set) by a *learned* update rule, then judged on D_test (our
query set). The paper's observation: one step of gradient descent

    theta_t = theta_{t-1} - alpha_t * grad_{theta_{t-1}} L_t                           (1)

has the form of an LSTM's cell-state update

    c_t = f_t * c_{t-1} + i_t * c~_t                                                   (2)

with c_t = theta_t, c~_t = -grad L_t, f_t = 1 and i_t = alpha_t. The meta-learner lets
the gates be computed from what the optimiser sees:

    i_t = sigmoid(W_I . [h_t, theta_{t-1}, i_{t-1}] + b_I)      a learning rate per coordinate  (3)
    f_t = sigmoid(W_F . [h_t, theta_{t-1}, f_{t-1}] + b_F)      how much of theta_{t-1} to keep (4)

where h_t is the output of an ordinary LSTM (the paper's first layer) that reads the
preprocessed gradient and loss, (pre(grad_i L_t), pre(L_t)) -- the issue's shorthand
[grad, L, theta_{t-1}, i_{t-1}] with the gradient and loss first encoded by that LSTM.

* **Coordinatewise sharing.** Every coordinate of theta is a row of one big batch: it
  has its own h, c, i, f, but all coordinates share W_I, b_I, W_F, b_F and the first
  LSTM's weights, so the meta-learner is tiny whatever the learner's size.
* **Preprocessing** of gradient and loss: ``metaedu.nn.preprocess.preprocess`` (p = 10).
* **Initial state.** theta_0 = c_0 is a learned vector (the meta-learner learns the
  learner's initialisation too); i_0 = f_0 = 0.
* **Initialisation.** Small random weights; b_F drawn large (f near 1: keep theta, let
  the meta-gradient flow), b_I drawn very negative (i near 0.01: a small learning rate).
* **Quick mode departs from the paper** to fit a few dozen meta-updates on a laptop
  CPU (``MetaLSTMSettings.quick``): c_0 starts from the baselines' pre-trained network, and the
  gates start as the *tuned fine-tune rule* (:func:`start_as_finetune`): the input gate at
  the step size that fine-tuning chose on meta-validation episodes, T = its number of
  steps, the forget gate at sigmoid(8) ~ 0.9997. So before meta-training the meta-learner
  is (up to that slight weight decay) the fine-tune baseline, and meta-training (Adam,
  c_0 three times faster than the gates) has to improve on it. The learner has three conv
  blocks of 8 filters. ``MetaLSTMSettings.full`` is the paper's setting. In both, the weights kept
  are those that score best on meta-validation episodes (held-out background alphabets;
  :class:`metaedu.training.ValidationKeeper`).
* **Training** (the paper's algorithm 1): T updates on D_train, then the loss of
  theta_T on D_test is back-propagated into Theta = (LSTM weights, W, b, c_0). As in
  the paper, the gradient and loss *inputs* are treated as constants: no second
  derivatives through the learner's gradients.
* **The learner** (:class:`metaedu.nn.conv_learner.ConvLearner`) keeps theta flat, one row per
  task. Its batch norm never uses statistics collected across episodes: D_test is normalised
  with the statistics of this episode's D_train under theta_T, never with D_test's own batch
  (no transduction), at meta-training and at meta-test time alike.

Paper symbols -> names here: theta = ``theta`` (``[tasks, P]``, P = learner.n_params),
c_0 = ``MetaLearnerLSTM.c0``, T = ``MetaLSTMSettings.updates``, i_t, f_t = ``input_gate``,
``forget_gate``, Theta = ``MetaLearnerLSTM.parameters()``, D_train/D_test = support/query.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.checkpoints import resolve
from metaedu.nn.conv_learner import ConvLearner
from metaedu.nn.lstm import lstm_cell
from metaedu.nn.preprocess import preprocess
from metaedu.runtime import check_settings
from metaedu.tasks.episodes import Episodes
from metaedu.training import ValidationKeeper, train


@dataclass
class MetaLSTMSettings:
    """Hyper-parameters of the meta-learner LSTM and its learner (one place for each)."""

    n_way: int = 5  # classes per episode
    k_shot: int = 5  # D_train images per class
    n_query: int = 15  # D_test images per class while meta-training
    filters: int = 8  # conv filters in each block of the learner (32 in the paper)
    blocks: int = 3  # conv blocks of the learner (4 in the paper)
    lstm_hidden: int = 20  # hidden size of the first, ordinary LSTM (20 in the paper)
    updates: int = 8  # T: learner updates per episode
    meta_batch: int = 2  # episodes per meta-update
    meta_steps: int = 240  # meta-updates
    meta_lr: float = 1e-2  # Adam learning rate for the meta-learner's weights (1e-3 in the paper)
    c0_lr: float | None = None  # Adam learning rate for c_0 (None: meta_lr)
    grad_clip: float = 0.25  # meta-gradient norm clip (the paper's 0.25)
    forget_bias: tuple[float, float] = (4.0, 6.0)  # b_F drawn uniformly in this range (the paper: large)
    input_bias: tuple[float, float] = (-5.0, -4.0)  # b_I drawn uniformly in this range (the paper: small)
    weight_scale: float = 0.01  # other meta-learner weights uniform in +-this
    warm_start: bool = False  # c_0 starts from the pre-trained baseline network instead of a random init
    finetune_start: bool = False  # gates start as the tuned fine-tune rule (see start_as_finetune)
    val_every: int = 40  # meta-updates between scores on the meta-validation episodes (model selection)
    val_episodes: int = 25  # fixed meta-validation episodes for that score
    eval_episodes: int = 100  # test episodes for the 95% interval (600 in the paper)
    eval_query: int = 15  # D_test images per class in meta-validation and test episodes (15 in the paper)
    checkpoint: bool = field(default=False, repr=False)  # save under cache_dir() and resume (full() turns it on)

    @classmethod
    def quick(cls) -> "MetaLSTMSettings":
        # A few dozen meta-updates on a laptop CPU, so the meta-learner starts from what it would otherwise
        # spend them learning: c_0 from the pre-trained network, and the gates as the tuned fine-tune rule
        # (start_as_finetune: i = its step size, T = its step count; f = sigmoid(8) ~ 0.9997). Adam at 1e-3
        # for the LSTM and gate weights, 3e-3 for c_0. Chosen by the paired accuracy difference to fine-tune
        # on meta-validation episodes (held-out background alphabets), never the evaluation split, among: the
        # earlier start (T = 8, i ~ 0.25, gates at Adam 1e-2) and, from the fine-tune start, c_0 rates
        # 1e-3 / 3e-3 / 1e-2 and 50 or 100 meta-updates. For lecture time (issue 14) the budget is then cut to
        # 30 meta-updates, scored at 15 and 30 on 15 validation episodes: the validation accuracy of the
        # 50-update runs had stopped rising by 30 (5-shot 90/91/92/92/91% and 1-shot 70/71/71/71/72% at
        # 10, 20, .., 50 updates, glyph data version 2). 80 test episodes per setting.
        return cls(forget_bias=(8.0, 8.0), warm_start=True, finetune_start=True, meta_steps=30, val_every=15,
                   val_episodes=15, meta_lr=1e-3, c0_lr=3e-3, eval_episodes=80)

    @classmethod
    def full(cls) -> "MetaLSTMSettings":
        return cls(filters=32, blocks=4, updates=12, meta_batch=8, meta_steps=20000, meta_lr=1e-3, n_query=15,
                   val_every=500, val_episodes=200, eval_episodes=600, checkpoint=True)

    @classmethod
    def reference(cls, k_shot: int = 1) -> "MetaLSTMSettings":
        # The shipped reference (metaedu.reference.meta_lstm): the paper's learner, T, meta-batch and Adam rate,
        # started as quick mode starts (c_0 the pre-trained network, gates the tuned fine-tune rule at T updates),
        # trained for as long as a time budget allows (meta_steps is a ceiling), kept by meta-validation.
        return cls(k_shot=k_shot, filters=32, blocks=4, updates=12, meta_batch=8, meta_steps=20000, meta_lr=1e-3,
                   c0_lr=1e-3, forget_bias=(8.0, 8.0), warm_start=True, finetune_start=True, val_every=250,
                   val_episodes=100, eval_episodes=200)

    def __post_init__(self) -> None:
        check_settings(self, positive=("n_way", "k_shot", "n_query", "filters", "blocks", "lstm_hidden", "updates",
                                       "meta_batch", "meta_steps", "meta_lr", "c0_lr", "grad_clip", "val_every",
                                       "val_episodes", "eval_episodes", "eval_query"),
                       non_negative=("weight_scale",))
        for name in ("forget_bias", "input_bias"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"MetaLSTMSettings.{name} is a range (low, high), got ({lo}, {hi})")


def start_as_finetune(settings: MetaLSTMSettings, lr: float, steps: int) -> MetaLSTMSettings:
    """``settings`` with the meta-learner starting as fine-tuning with step size ``lr`` for ``steps`` steps.

    When ``settings.finetune_start`` is set: the input-gate bias becomes logit(lr) (so i_t ~ lr
    while the gate weights are small, as they start) and T = ``steps``; pass the fine-tune
    choice made on meta-validation episodes (``baselines.finetune_hyperparameters``). Otherwise
    ``settings`` is returned unchanged (the paper's initialisation).
    """
    if not settings.finetune_start:
        return settings
    if not 0.0 < lr < 1.0:
        raise ValueError(f"an input gate is a sigmoid, so the fine-tune step size must lie in (0, 1), got {lr}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"the fine-tune step count must be a positive integer, got {steps!r}")
    bias = math.log(lr / (1.0 - lr))
    return dataclasses.replace(settings, updates=int(steps), input_bias=(bias, bias))


# ---------------------------------------------------------------------------
# The meta-learner
# ---------------------------------------------------------------------------


def cell_update(theta_prev: torch.Tensor, grad: torch.Tensor, input_gate, forget_gate) -> torch.Tensor:
    """Equation (2) with c~_t = -grad: theta_t = f_t * theta_{t-1} + i_t * (-grad), elementwise (``[tasks, P]``)."""
    return forget_gate * theta_prev - input_gate * grad


@dataclass
class CellState:
    """Everything the meta-learner carries from update t-1 to t, per coordinate."""

    theta: torch.Tensor  # [tasks, P]  c_{t-1} = theta_{t-1}
    input_gate: torch.Tensor  # [tasks, P]  i_{t-1}
    forget_gate: torch.Tensor  # [tasks, P]  f_{t-1}
    h: torch.Tensor  # [tasks * P, lstm_hidden]  first LSTM's output
    c: torch.Tensor  # [tasks * P, lstm_hidden]  first LSTM's cell


class MetaLearnerLSTM(nn.Module):
    """Theta: the first LSTM (4 inputs per coordinate), the gate weights W_I, W_F, b_I, b_F, and c_0."""

    def __init__(self, learner: ConvLearner, settings: MetaLSTMSettings, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.learner = learner
        s = settings
        hid = s.lstm_hidden
        u = lambda *shape: (torch.rand(*shape, generator=generator) * 2 - 1) * s.weight_scale  # noqa: E731
        self.lstm = nn.LSTMCell(4, hid)
        with torch.no_grad():
            for weight in self.lstm.parameters():
                weight.copy_(u(*weight.shape))
        self.W_I = nn.Parameter(u(hid + 2))  # acts on [h_t, theta_{t-1}, i_{t-1}]
        self.W_F = nn.Parameter(u(hid + 2))  # acts on [h_t, theta_{t-1}, f_{t-1}]
        lo, hi = s.input_bias
        self.b_I = nn.Parameter(lo + (hi - lo) * torch.rand((), generator=generator))
        lo, hi = s.forget_bias
        self.b_F = nn.Parameter(lo + (hi - lo) * torch.rand((), generator=generator))
        self.c0 = nn.Parameter(learner.init(generator))  # [P] theta_0, learned

    def start(self, tasks: int) -> CellState:
        """theta_0 = c_0 for every task; gates and LSTM state zero."""
        P, hid = self.learner.n_params, self.lstm.hidden_size
        zeros = self.c0.new_zeros(tasks, P)
        h = self.c0.new_zeros(tasks * P, hid)
        return CellState(self.c0.expand(tasks, P), zeros, zeros, h, h)

    def step(self, state: CellState, grad: torch.Tensor, loss: torch.Tensor) -> CellState:
        """One update of every coordinate: equations (3), (4), then (2).

        Args:
            grad: ``[tasks, P]`` gradient of L_t at theta_{t-1} (a constant: no second derivatives).
            loss: ``[tasks]`` L_t (a constant).
        """
        tasks, P = grad.shape
        x = torch.cat([preprocess(grad), preprocess(loss)[:, None, :].expand(tasks, P, 2)], dim=-1)  # [tasks, P, 4]
        h, c = lstm_cell(self.lstm, x.reshape(tasks * P, 4), (state.h, state.c))  # [tasks * P, hid], = self.lstm(...)
        theta_prev = state.theta.reshape(-1, 1)  # [tasks * P, 1]
        i = torch.sigmoid(torch.cat([h, theta_prev, state.input_gate.reshape(-1, 1)], 1) @ self.W_I + self.b_I)
        f = torch.sigmoid(torch.cat([h, theta_prev, state.forget_gate.reshape(-1, 1)], 1) @ self.W_F + self.b_F)
        i, f = i.view(tasks, P), f.view(tasks, P)  # [tasks, P]
        theta = cell_update(state.theta, grad, i, f)  # (2): c_t = f_t * c_{t-1} + i_t * (-grad)
        return CellState(theta, i, f, h, c)

    forward = step  # so that torch.func.functional_call(meta, weights, (state, grad, loss)) works

    @torch.no_grad()
    def set_sgd(self, lr: float) -> None:
        """Make the meta-learner plain SGD: W = 0, f_t = sigmoid(50) = 1 exactly in float32/64, i_t = lr."""
        if not 0.0 < lr < 1.0:
            raise ValueError(f"an input gate is a sigmoid, so the SGD learning rate must lie in (0, 1), got {lr}")
        for weight in (self.W_I, self.W_F):
            weight.zero_()
        self.b_I.fill_(math.log(lr / (1.0 - lr)))
        self.b_F.fill_(50.0)


@dataclass
class Trace:
    """What happened during one run of the learner's T updates (for plots)."""

    input_gate: torch.Tensor  # [T, tasks, P]
    forget_gate: torch.Tensor  # [T, tasks, P]
    train_loss: torch.Tensor  # [T, tasks]  L_t on D_train at theta_{t-1}


def train_learner(
    meta: MetaLearnerLSTM, x_support: torch.Tensor, y_support: torch.Tensor, updates: int, record: bool = False
) -> tuple[torch.Tensor, Trace | None, list[torch.Tensor]]:
    """Algorithm 1, lines 5-12: T updates of each task's learner on its D_train.

    Args:
        x_support: ``[tasks, n_way * k_shot, C, H, W]``; y_support: ``[tasks, n_way * k_shot]``.
    Returns: theta_T ``[tasks, P]`` (differentiable w.r.t. Theta), the gate trace when
        ``record``, and the list theta_0 .. theta_T (detached) when ``record``.
    """
    state = meta.start(x_support.shape[0])
    gates_i, gates_f, losses, thetas = [], [], [], []
    for _ in range(updates):
        theta_const = state.theta.detach().requires_grad_(True)  # gradient and loss are inputs, not paths
        with torch.enable_grad():
            loss = meta.learner.task_losses(theta_const, x_support, y_support)  # [tasks]
            (grad,) = torch.autograd.grad(loss.sum(), theta_const)  # [tasks, P]; tasks are independent
        if record:
            thetas.append(state.theta.detach())
        state = meta.step(state, grad, loss.detach())
        if record:
            gates_i.append(state.input_gate.detach())
            gates_f.append(state.forget_gate.detach())
            losses.append(loss.detach())
    if not record:
        return state.theta, None, []
    thetas.append(state.theta.detach())
    trace = Trace(torch.stack(gates_i), torch.stack(gates_f), torch.stack(losses))
    return state.theta, trace, thetas


def query_logits(learner: ConvLearner, theta: torch.Tensor, episodes: Episodes) -> torch.Tensor:
    """Scores of D_test under theta, batch-normalised with D_train's statistics: ``[tasks, n_query_total, n_way]``."""
    n_s = episodes.x_support.shape[1]
    x = torch.cat([episodes.x_support, episodes.x_query], dim=1)
    return learner.logits(theta, x, n_stats=n_s)[:, n_s:]


def meta_loss(meta: MetaLearnerLSTM, episodes: Episodes, updates: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1, lines 5-15: the D_test loss of theta_T (mean over tasks) and its accuracy (%)."""
    theta_T, _, _ = train_learner(meta, episodes.x_support, episodes.y_support, updates)
    logits = query_logits(meta.learner, theta_T, episodes)  # [tasks, nq, n_way]
    loss = F.cross_entropy(logits.flatten(0, 1), episodes.y_query.flatten())
    acc = (logits.argmax(-1) == episodes.y_query).float().mean() * 100
    return loss, acc.detach()


def build(
    settings: MetaLSTMSettings, device: str | torch.device = "cpu", seed: int = 0, image_size: int = 28,
    theta0: torch.Tensor | None = None,
) -> MetaLearnerLSTM:
    """A learner and its meta-learner, initialised as the paper describes.

    ``theta0`` (``[P]``, e.g. the pre-trained baseline network) replaces the random start of c_0;
    it is still learned from there.
    """
    learner = ConvLearner(settings.n_way, settings.filters, settings.blocks, image_size=image_size)
    meta = MetaLearnerLSTM(learner, settings, torch.Generator().manual_seed(seed))
    if theta0 is not None:
        if theta0.shape != (learner.n_params,):
            raise ValueError(f"theta0 must be [{learner.n_params}] for this learner, got shape {tuple(theta0.shape)}")
        with torch.no_grad():
            meta.c0.copy_(theta0)
    return meta.to(device)


def meta_train(
    meta: MetaLearnerLSTM, sampler, settings: MetaLSTMSettings, checkpoint=None, progress: bool = True,
    validation: Episodes | None = None, max_seconds: float | None = None,
):
    """Meta-train Theta with Adam through the shared training loop; returns the History.

    ``max_seconds`` stops after the meta-update that uses up this much wall time (``history.steps_done``).

    With ``validation`` episodes (from held-out meta-training alphabets), the weights that score
    best on them (every ``settings.val_every`` meta-updates) are kept; the scores are in
    ``history["val_acc"]`` at meta-updates ``history["val_step"]``. ``checkpoint``: see
    :func:`metaedu.checkpoints.resolve` (``None``: as ``settings.checkpoint`` says).
    """
    checkpoint = resolve(checkpoint, "meta_lstm", settings, meta, getattr(sampler, "data", None), sampler.generator,
                         validation)
    c0_lr = settings.meta_lr if settings.c0_lr is None else settings.c0_lr
    rest = [p for name, p in meta.named_parameters() if name != "c0"]
    optimizer = torch.optim.Adam([{"params": rest}, {"params": [meta.c0], "lr": c0_lr}], lr=settings.meta_lr)
    state = {"meta": meta, "opt": optimizer, "sampler": sampler.generator}
    keeper = None
    if validation is not None:
        keeper = ValidationKeeper(meta, lambda: query_accuracy(meta, validation, settings.updates), settings.val_every)
        state["validation"] = keeper

    def step(i: int) -> dict:  # one meta-update on a meta-batch (algorithm 1, line 16)
        episodes = sampler.sample(settings.meta_batch)
        loss, acc = meta_loss(meta, episodes, settings.updates)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(meta.parameters(), settings.grad_clip)
        optimizer.step()
        if keeper is not None:
            keeper(i + 1, last=i == settings.meta_steps - 1)
        return {"loss": loss.detach(), "acc": acc}

    history = train(step, settings.meta_steps, state=state, checkpoint=checkpoint, progress=progress,
                    desc="meta-learner LSTM", max_seconds=max_seconds)
    if keeper is not None:
        keeper.restore()
        history.metrics["val_step"], history.metrics["val_acc"] = list(keeper.steps), list(keeper.accs)
    return history


def query_accuracy(meta: MetaLearnerLSTM, episodes: Episodes, updates: int) -> float:
    """Accuracy (%) on the D_test sets of ``episodes`` after ``updates`` learned updates on D_train."""
    logits = predictor(meta, updates)(episodes)
    return float((logits.argmax(-1) == episodes.y_query).float().mean() * 100)


def predictor(meta: MetaLearnerLSTM, updates: int):
    """``predict(episodes) -> logits`` for :func:`metaedu.evaluation.episode_accuracy`."""

    def predict(episodes: Episodes) -> torch.Tensor:
        theta_T, _, _ = train_learner(meta, episodes.x_support, episodes.y_support, updates)
        return query_logits(meta.learner, theta_T, episodes)

    return predict


@torch.no_grad()
def trace_episode(meta: MetaLearnerLSTM, episodes: Episodes, updates: int) -> dict:
    """Gates and the learner's D_test accuracy after each update, for plots and the widget.

    Returns a dict with ``input_gate``/``forget_gate`` ``[T, tasks, P]``, ``train_loss``
    ``[T, tasks]`` and ``query_acc`` ``[T + 1, tasks]`` (% correct with theta_0 .. theta_T).
    """
    _, trace, thetas = train_learner(meta, episodes.x_support, episodes.y_support, updates, record=True)
    accs = []
    for theta in thetas:
        pred = query_logits(meta.learner, theta, episodes).argmax(-1)
        accs.append((pred == episodes.y_query).float().mean(1) * 100)
    return {
        "input_gate": trace.input_gate.cpu(),
        "forget_gate": trace.forget_gate.cpu(),
        "train_loss": trace.train_loss.cpu(),
        "query_acc": torch.stack(accs).cpu(),
        "layers": meta.learner.layers(),
    }
