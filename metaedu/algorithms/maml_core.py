"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017) and three relatives.

MAML learns an initialisation theta from which one or a few gradient steps on a
new task's K examples already give a good model. Read next to the paper
(algorithms 1 and 2):

1. Sample a meta-batch of tasks T_i ~ p(T), each with a support set (K examples)
   and a query set (new examples of the same task).
2. Inner loop, per task (eq. 1), repeated ``inner_steps`` times::

       theta'_i = theta - alpha * grad_theta L_Ti(f_theta)        # on the support set

3. Meta-objective (eq. 2): the query loss of the adapted models,
   ``min_theta sum_i L_Ti(f_theta'_i)``.
4. Meta-update (eq. 3): ``theta <- theta - beta * grad_theta sum_i L_Ti(f_theta'_i)``
   (we use Adam with step ``beta``, as the paper does). The gradient runs back
   through step 2, so it contains second derivatives (Hessian-vector products).

Symbols and names: theta = the model's parameters; theta'_i = ``fast`` (one
weight set per task, ``{name: [tasks, *shape]}``); alpha = ``inner_lr``;
beta = ``outer_lr``; K = ``k_shot``; L_Ti = ``task_losses`` (mean squared error
for regression, cross-entropy for classification).

Variants, all settings of the same code path:

* **First-order MAML** (``first_order=True``, the paper's section 5.2): the inner
  gradient is treated as a constant, so d theta'_i / d theta = I and the
  meta-gradient is the query-loss gradient at theta'_i. No second derivatives.
* **Meta-SGD** (Li et al. 2017, ``meta_sgd=True``): alpha becomes a learned tensor
  of theta's shape, theta'_i = theta - alpha * grad (element-wise), meta-learned
  with theta.
* **ANIL** (Raghu et al. 2020, "rapid learning or feature reuse?",
  ``anil=True``): only the head (the last layer) adapts in the inner loop;
  the body is meta-learned but the same for every task.

Inner and test-time steps are separate arguments (``inner_steps`` and
``test_inner_steps`` in the settings), as in the paper (1 step in training, up
to 10 at test time for sinusoids; 1 and 3 for 5-way Omniglot).

All tasks of a meta-batch are adapted together: theta is expanded to a leading
task dimension (no copy), the summed support losses are differentiated once
(task i's loss depends only on its own slice, so the gradient is per task), and
the forward pass is batched per backbone (:mod:`metaedu.nn.functional`, which
also states the batch-norm policy: each task's own batch statistics, no running
statistics). The module is never copied and its parameters are never rewritten.
Training calls :meth:`MAML.meta_gradient`, which runs the meta-batch as a
:class:`~metaedu.algorithms.maml_plan.Plan` says: all tasks in one pass, a few per
pass (only one pass's graph in memory at a time), or the per-task loop, in the
memory layout measured fastest on this machine for these shapes
(:mod:`metaedu.algorithms.maml_plan`); every plan gives the same meta-gradient.
"""


from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaedu import runtime
from metaedu.algorithms import maml_plan
from metaedu.algorithms.maml_plan import Plan
from metaedu.nn.functional import (
    Params,
    batched_forward,
    check_batch_norm,
    mlp_mse_gradients,
    parameter_dict,
    per_task,
    single_forward,
)

LOSSES = ("mse", "cross_entropy")


# ----------------------------------------------------------------------------- the learner


def head_names(model: nn.Module) -> list[str]:
    """Names of the parameters of the last layer that owns any (ANIL's head)."""
    last = None
    for module_name, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if own:
            last = (module_name, own)
    if last is None:
        raise ValueError("the model has no parameters to adapt")
    prefix = f"{last[0]}." if last[0] else ""
    return [prefix + n for n in last[1]]


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


class MAML(nn.Module):
    """A network plus the MAML inner loop (and its first-order, Meta-SGD and ANIL variants).

    Args:
        model: the network f_theta (e.g. ``MLP((1, 40, 40, 1))`` or ``Conv4(n_classes=5,
            track_running_stats=False)``); its parameters are theta.
        loss: ``"mse"`` (regression), ``"cross_entropy"`` (classification), or a function
            ``(outputs [tasks, n, out], targets) -> [tasks]`` giving each task's mean loss (e.g. GrBAL's
            Gaussian negative log-likelihood, :func:`metaedu.rl.dynamics.gaussian_nll`).
        inner_lr: alpha (Meta-SGD's initial value of every learned alpha).
        first_order: drop the second derivatives in the meta-gradient.
        meta_sgd: learn one alpha per parameter entry.
        anil: adapt only the head (:func:`head_names`) in the inner loop.
        task_chunk: tasks per forward pass in :meth:`meta_gradient` (short for ``plan=Plan(task_chunk)``).
        plan: how :meth:`meta_gradient` runs: ``"auto"`` (measured on the first meta-batch of each shape and
            cached, :mod:`metaedu.algorithms.maml_plan`), a :class:`~metaedu.algorithms.maml_plan.Plan`, or
            its text, e.g. ``"loop"`` or ``"2/contiguous/unfold"``.

    Example::

        learner = MAML(MLP((1, 40, 40, 1)), "mse", inner_lr=0.01)
        loss, _ = learner.meta_loss(tasks, steps=1)   # tasks from SinusoidTasks.sample(25)
        loss.backward()                                # meta-gradient in learner.parameters()
    """

    def __init__(self, model: nn.Module, loss: str = "mse", inner_lr: float = 0.01, first_order: bool = False,
                 meta_sgd: bool = False, anil: bool = False, task_chunk: int | None = None, plan="auto") -> None:
        super().__init__()
        if not callable(loss) and loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} or a function (outputs, targets) -> [tasks], got {loss!r}")
        if not inner_lr > 0:
            raise ValueError(f"inner_lr (alpha) must be positive, got {inner_lr!r}")
        check_batch_norm(model)
        self.model, self.loss, self.inner_lr = model, loss, float(inner_lr)
        self.first_order, self.meta_sgd, self.anil = first_order, meta_sgd, anil
        if task_chunk is not None and task_chunk < 1:
            raise ValueError(f"task_chunk must be a positive number of tasks or None, got {task_chunk!r}")
        plan = maml_plan.parse_plan(plan)
        if task_chunk is not None:
            if plan != "auto":
                raise ValueError(f"give task_chunk or plan, not both (got {task_chunk!r} and {str(plan)!r})")
            plan = Plan(tasks_per_pass=task_chunk)
        self.plan = plan  # "auto" or a Plan
        self._plans: dict = {}  # plans chosen for "auto", by shapes (this process's memo of the cache)
        self._forward_options: dict = {}  # the running plan's Conv4 options for batched_forward
        self._analytic = False  # the running plan writes the inner gradients out (an MLP with MSE)
        names = [n for n, _ in model.named_parameters()]
        self.adapted = head_names(model) if anil else names  # the parameters the inner loop changes
        self.inner_lrs = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.full_like(p, inner_lr)) for n, p in model.named_parameters() if n in self.adapted}
        ) if meta_sgd else None

    def alpha(self, name: str):
        """The inner step size for parameter ``name``: a float, or Meta-SGD's learned tensor."""
        return self.inner_lrs[_key(name)] if self.meta_sgd else self.inner_lr

    def task_losses(self, fast: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task mean loss ``[tasks]`` and the outputs ``[tasks, n, out]`` of the weights ``fast``."""
        out = batched_forward(self.model, fast, x, **self._forward_options)  # [tasks, n, out]
        return task_loss(out, y, self.loss), out

    def adapt(self, x_support: torch.Tensor, y_support: torch.Tensor, steps: int,
              create_graph: bool | None = None, keep_path: bool = False, start: Params | None = None):
        """Inner loop (eq. 1) for all tasks at once; returns theta'_i as ``{name: [tasks, ...]}``.

        ``create_graph`` defaults to ``not first_order`` (second-order meta-gradient);
        at test time pass ``False``. With ``keep_path`` the list of weights after
        0, 1, ..., ``steps`` steps is returned instead. ``start`` (``{name: [tasks, ...]}``)
        begins each task from its own weights instead of theta (PLATIPUS starts from a
        sampled theta, ARML from a gated theta_0; lecture 10's dynamic evaluation continues from
        its last adapted weights, detached); gradients flow back into ``start``.
        """
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        create_graph = (not self.first_order) if create_graph is None else create_graph
        tasks = x_support.shape[0]
        if start is None:
            fast = per_task(parameter_dict(self.model), tasks)  # [tasks, *shape] views of theta
        else:
            names = {n for n, _ in self.model.named_parameters()}
            if set(start) != names or any(p.shape[0] != tasks for p in start.values()):
                raise ValueError(f"start must hold every parameter of the model with a leading dimension of "
                                 f"{tasks} tasks; got {sorted(start)}")
            fast = dict(start)
        if steps and not all(fast[n].requires_grad for n in self.adapted):
            fast = {n: (p.detach().requires_grad_() if n in self.adapted else p) for n, p in fast.items()}
        path = [fast]
        for _ in range(steps):
            if self._analytic:  # the same gradients, as expressions of fast (maml_plan's "analytic")
                written = mlp_mse_gradients(self.model, fast, x_support, y_support)[2]
                grads = [written[n] if create_graph else written[n].detach() for n in self.adapted]
            else:
                loss, _ = self.task_losses(fast, x_support, y_support)  # [tasks]
                # summing over tasks keeps the gradients per task: task i only touches fast[name][i]
                grads = torch.autograd.grad(loss.sum(), [fast[n] for n in self.adapted], create_graph=create_graph)
            fast = dict(fast)
            for name, g in zip(self.adapted, grads):
                fast[name] = fast[name] - self.alpha(name) * g  # theta' = theta - alpha * grad
            path.append(fast)
        return path if keep_path else fast

    def query_losses(self, x_support, y_support, x_query, y_query, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each task's query loss ``[tasks]`` after ``steps`` inner steps, and the query outputs."""
        fast = self.adapt(x_support, y_support, steps)
        return self.task_losses(fast, x_query, y_query)

    def meta_loss(self, tasks, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta-objective (eq. 2): mean over tasks of the query loss after ``steps`` inner steps.

        ``tasks`` is a batch of :class:`~metaedu.tasks.episodes.Episodes` or
        :class:`~metaedu.tasks.regression.RegressionTasks`. Returns the scalar loss
        and the query outputs ``[tasks, n_query_total, out]``.
        """
        loss, out = self.query_losses(tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query, steps)
        return loss.mean(), out

    def plan_for(self, tasks, steps: int) -> Plan:
        """The plan :meth:`meta_gradient` uses for this meta-batch's shapes (measured once when ``plan="auto"``)."""
        if self.plan != "auto":
            return self.plan
        x = tasks.x_support
        imposed = maml_plan.environment_plan(self, x.device)
        if imposed is not None:
            return imposed
        memo = (tuple(x.shape), tuple(tasks.x_query.shape), x.dtype, str(x.device), steps, torch.get_num_threads())
        if memo not in self._plans:
            self._plans[memo] = maml_plan.choose(self, tasks, steps)
        return self._plans[memo]

    def loop_allowed(self) -> bool:
        """Whether the per-task loop computes this learner's objective (not so where a subclass changes it)."""
        return all(getattr(type(self), m) is getattr(MAML, m) for m in ("adapt", "task_losses", "query_losses"))

    def meta_gradient(self, tasks, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Backpropagate the meta-objective into the parameters' ``.grad``; return it (detached) and the outputs.

        The same gradient as ``meta_loss(tasks, steps)[0].backward()``, computed as :meth:`plan_for` says:
        the meta-loss is a mean over tasks, so each pass's share is backpropagated and then freed, and
        the peak memory is that of one pass. Gradients accumulate, as with ``backward()``: zero them first.
        """
        return self.run_plan(self.plan_for(tasks, steps), tasks, steps)

    def run_plan(self, plan: Plan, tasks, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`meta_gradient` with a given plan (the autotuner times this)."""
        n = tasks.x_support.shape[0]
        if plan.loop and not self.loop_allowed():
            raise ValueError(f"the plan 'loop' runs MAML's own objective; {type(self).__name__} changes it")
        if plan.inner_gradient == "analytic" and not maml_plan.analytic_allowed(self):
            raise ValueError(f"the plan {str(plan)!r} writes out the inner gradients of an MLP's MSE; this learner "
                             f"({type(self).__name__}, {type(self.model).__name__}, loss {self.loss!r}) is not one")
        size = plan.size(n)
        if tasks.x_support.device.type != "cpu" or size >= n:
            return self._run_passes(plan, tasks, steps)
        # Several passes on the CPU: each frees buffers of tens of MB that the next pass allocates again.
        # By default glibc returns such buffers to the system and every pass faults their pages in anew
        # (about 300k page faults per Conv4 meta-iteration, slower than the per-task loop with 2 threads,
        # issue 25); inside this block they are kept for the next pass, and given back at its end.
        with runtime.freed_memory_kept(warn=False):
            return self._run_passes(plan, tasks, steps)

    def _run_passes(self, plan: Plan, tasks, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        if plan.loop:
            return _loop_meta_gradient(self, tasks, steps)
        n = tasks.x_support.shape[0]
        size = plan.size(n)
        total, outs = 0.0, []
        saved, self._forward_options = self._forward_options, plan.forward_options()
        self._analytic = plan.inner_gradient == "analytic"
        try:
            for start in range(0, n, size):
                data = (tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query)
                if size < n:  # one pass takes the tensors as they are
                    data = tuple(t[start:start + size] for t in data)
                losses, out = self.query_losses(*data, steps)
                (losses.sum() / n).backward()
                total = total + losses.detach().sum()
                outs.append(out.detach())
        finally:
            self._forward_options, self._analytic = saved, False
        return total / n, outs[0] if len(outs) == 1 else torch.cat(outs)

    def predict(self, x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor, steps: int) -> torch.Tensor:
        """Adapt to each task's support set (no meta-gradient) and return the query outputs, detached."""
        with torch.enable_grad():
            fast = self.adapt(x_support, y_support, steps, create_graph=False)
        with torch.no_grad():
            return batched_forward(self.model, fast, x_query)


def task_loss(out: torch.Tensor, y: torch.Tensor, loss) -> torch.Tensor:
    """Mean loss of each task: outputs ``[tasks, n, out]`` and targets -> ``[tasks]``."""
    if callable(loss):
        return loss(out, y)
    if loss == "mse":
        if out.shape != y.shape:
            raise ValueError(f"outputs {tuple(out.shape)} and targets {tuple(y.shape)} differ in shape")
        return F.mse_loss(out, y, reduction="none").mean(tuple(range(1, out.dim())))
    if y.shape != out.shape[:2]:
        raise ValueError(f"labels {tuple(y.shape)} do not match outputs {tuple(out.shape)} (expected [tasks, n])")
    return F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


# ----------------------------------------------------------------------------- one task, from given weights


def _shared_start(model: nn.Module, params: Params, tasks: int) -> Params:
    """One set of weights ``params`` (the model's names and shapes) as every task's start, ``[tasks, ...]``."""
    names = {n for n, _ in model.named_parameters()}
    if set(params) != names:
        raise ValueError(f"params must hold the model's parameters {sorted(names)}, got {sorted(params)}")
    return per_task(params, tasks)


def inner_step(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, alpha: float,
               loss: str = "mse") -> Params:
    """theta' = theta - alpha * grad L(f_theta) for one task (``x`` ``[n, ...]``) from the weights ``params``.

    The graph of the gradient is kept, so a meta-gradient can flow through the result. The
    lecture's from-scratch cells fall back to it when their own version is not written yet.
    """
    fast = MAML(model, loss, alpha).adapt(x[None], y[None], 1, create_graph=True, start=_shared_start(model, params, 1))
    return {name: p[0] for name, p in fast.items()}


def meta_gradient_of(model: nn.Module, params: Params, tasks, alpha: float, steps: int = 1,
                     first_order: bool = False, loss: str = "mse") -> Params:
    """The meta-gradient (eq. 3's gradient of the mean query loss) with respect to ``params``, as a dict.

    ``first_order=True`` treats the inner gradients as constants (first-order MAML).
    """
    learner = MAML(model, loss, alpha, first_order=first_order)
    fast = learner.adapt(tasks.x_support, tasks.y_support, steps,
                         start=_shared_start(model, params, tasks.x_support.shape[0]))
    query_loss = learner.task_losses(fast, tasks.x_query, tasks.y_query)[0].mean()
    return dict(zip(params, torch.autograd.grad(query_loss, list(params.values()))))


# ----------------------------------------------------------------------------- the slow reference


def _one_task(learner: MAML, tasks, i: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Task ``i``'s query loss after ``steps`` inner steps, and its query outputs ``[n, out]``, through the
    unbatched module (``functional_call``) from its own differentiable copy of theta."""
    fast = {n: p.clone() for n, p in parameter_dict(learner.model).items()}
    for _ in range(steps):
        out = single_forward(learner.model, fast, tasks.x_support[i])
        loss = task_loss(out[None], tasks.y_support[i][None], learner.loss)[0]
        names = learner.adapted
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=not learner.first_order)
        fast = {**fast, **{n: fast[n] - learner.alpha(n) * g for n, g in zip(names, grads)}}
    out = single_forward(learner.model, fast, tasks.x_query[i])
    return task_loss(out[None], tasks.y_query[i][None], learner.loss)[0], out


def per_task_meta_loss(learner: MAML, tasks, steps: int) -> torch.Tensor:
    """The same meta-objective, one task at a time in a Python loop (the usual way; slow).

    Each task gets its own clone of theta's tensors and the unbatched module via
    ``functional_call``; this shares no forward code with :meth:`MAML.adapt`, so the
    tests and the benchmark use it as an independent reference.
    """
    n = tasks.x_support.shape[0]
    return sum(_one_task(learner, tasks, i, steps)[0] for i in range(n)) / n


def _loop_meta_gradient(learner: MAML, tasks, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The plan ``"loop"``: :func:`per_task_meta_loss`'s loop, each task backpropagated as soon as it is done."""
    n = tasks.x_support.shape[0]
    total, outs = 0.0, []
    for i in range(n):
        loss, out = _one_task(learner, tasks, i, steps)
        (loss / n).backward()
        total = total + loss.detach()
        outs.append(out.detach())
    return total / n, torch.stack(outs)
