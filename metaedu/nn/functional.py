"""Networks as pure functions of a parameter dict, for many tasks at once.

Gradient-based meta-learners (MAML and its relatives) give every task of a
meta-batch its own copy of the weights. Here those copies are one dict of
tensors with a leading task dimension, ``{name: [tasks, *shape]}``, and a
forward pass maps ``x`` ``[tasks, n, ...]`` to ``[tasks, n, out]`` with each
task seen only by its own weights. The module itself is never copied and its
parameters are never rewritten; it only supplies the architecture.

:func:`batched_forward` picks the fastest route per backbone:

* :class:`~metaedu.nn.backbones.MLP`: batched matrix products (``baddbmm``).
* :class:`~metaedu.nn.backbones.Conv4`: the tasks are stacked along the channel
  axis and each convolution runs once as a *grouped* convolution with one group
  per task; batch norm over that stacked axis gives each task its own statistics
  (:func:`grouped_conv_blocks`, which the meta-learner LSTM's flat-parameter
  learner runs too).
* any other module: ``torch.func.vmap`` over ``torch.func.functional_call``.

**Taps.** The MLP and Conv4 routes can record, for each fully connected layer,
its input and its pre-activation output (a :class:`Tap`), without a second
forward pass: pass a list as ``taps``. Curvature estimates that factor a
layer's Fisher into input and output statistics (K-FAC, lecture 07) read them.
Convolutions are not tapped.

**Batch-norm policy.** Batch norm always normalises with the statistics of the
batch being passed through, per task and per channel (``F.batch_norm`` with
``training=True`` and no running buffers). Nothing is averaged across tasks,
and the support and query sets of a task are separate forward passes, so the
query set's statistics never reach the support set's prediction. Running
statistics are not used at all, so modules must be built with
``track_running_stats=False`` (:func:`check_batch_norm` says so otherwise). The
learned scale and shift of batch norm are ordinary parameters.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from metaedu.nn.backbones import MLP, Conv4

Params = dict[str, torch.Tensor]


class Tap(NamedTuple):
    """A fully connected layer seen during a batched forward pass."""

    layer: str  # the layer's parameter prefix: its weights are ``layer + ".weight"`` and ``layer + ".bias"``
    inputs: torch.Tensor  # [tasks, n, in], what the layer received
    outputs: torch.Tensor  # [tasks, n, out], its pre-activation output


def parameter_dict(module: nn.Module) -> Params:
    """The module's parameters by name (the live tensors, so gradients reach them)."""
    return dict(module.named_parameters())


def per_task(params: Params, tasks: int) -> Params:
    """Give each of ``tasks`` tasks a view of the shared weights: ``[*shape]`` -> ``[tasks, *shape]``.

    ``expand`` copies nothing; gradients taken with respect to the expanded tensor
    are per task, and those flowing back into ``params`` are summed over tasks.
    """
    if tasks < 1:
        raise ValueError(f"tasks must be at least 1, got {tasks}")
    return {name: p.expand(tasks, *p.shape) for name, p in params.items()}  # a new leading dimension, one op


def check_batch_norm(module: nn.Module) -> None:
    """Raise if a batch-norm layer keeps running statistics (see the module docstring)."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.track_running_stats:
            raise ValueError(
                f"batch norm layer {name!r} tracks running statistics; the functional inner loop uses "
                "each task's batch statistics only, so build the network with track_running_stats=False "
                "(e.g. Conv4(track_running_stats=False))"
            )


def _check_inputs(params: Params, x: torch.Tensor) -> int:
    if x.dim() < 3:
        raise ValueError(f"x must be [tasks, n, ...] with a leading task dimension, got shape {tuple(x.shape)}")
    tasks = x.shape[0]
    for name, p in params.items():
        if p.shape[0] != tasks:
            raise ValueError(
                f"parameter {name!r} has leading size {p.shape[0]} but x holds {tasks} tasks; "
                "use per_task(params, tasks) to give every task its own weights"
            )
    return tasks


def mlp_forward(model: MLP, params: Params, x: torch.Tensor, taps: list[Tap] | None = None) -> torch.Tensor:
    """MLP with per-task weights: ``x`` ``[tasks, n, in]`` -> ``[tasks, n, out]`` (``taps``: see the module docstring)."""
    h = x
    for i, layer in enumerate(model.net):
        if isinstance(layer, nn.Linear):
            w = params[f"net.{i}.weight"]  # [tasks, out, in]
            b = params[f"net.{i}.bias"]  # [tasks, out]
            s = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # [tasks, n, out]
            if taps is not None:
                taps.append(Tap(f"net.{i}", h, s))
            h = s
        else:
            h = layer(h)  # element-wise activation
    return h


#: How each element-wise activation passes an error back, from the error, the activation's input ``a`` and its
#: output ``h``. ReLU's is autograd's own ``threshold_backward`` (the error where ``a > 0``, else 0), whose
#: derivative with respect to ``a`` is zero, as autograd's is.
ACTIVATION_BACKWARD = {nn.ReLU: lambda error, a, h: torch.ops.aten.threshold_backward(error, a, 0.0),
                       nn.Tanh: lambda error, a, h: error * (1 - h * h),
                       nn.Sigmoid: lambda error, a, h: error * h * (1 - h)}


def mlp_mse_supported(model: nn.Module) -> bool:
    """Whether :func:`mlp_mse_gradients` can take ``model``: an MLP whose activations it knows."""
    return type(model) is MLP and all(isinstance(layer, nn.Linear) or type(layer) in ACTIVATION_BACKWARD
                                      for layer in model.net)


def mlp_mse_gradients(model: MLP, params: Params, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Params]:
    """Each task's mean squared error and its gradient with respect to that task's weights, written out.

    Returns ``(losses [tasks], outputs [tasks, n, out], {name: [tasks, *shape]})``: the gradients that
    ``torch.autograd.grad(losses.sum(), params)`` gives, computed by the backward recursion of a fully
    connected network (the output error; then, from the top layer down, weight gradient = error^T times
    the layer's input, bias gradient = the error summed over the examples, and the error passed down
    through the weights and the activation). They are ordinary tensor expressions of ``params``, so
    MAML's second-order meta-gradient differentiates them as usual; what is saved is a pass of the
    autograd engine over the forward graph, a large share of the cost for a small network.
    """
    if not mlp_mse_supported(model):
        raise ValueError(f"mlp_mse_gradients takes an MLP with activations "
                         f"{[a.__name__ for a in ACTIVATION_BACKWARD]}, not {model!r}")
    _check_inputs(params, x)
    taps: list[Tap] = []  # each linear layer's input and pre-activation output, from the batched forward pass
    out = mlp_forward(model, params, x, taps)
    activations = [type(layer) for layer in model.net if not isinstance(layer, nn.Linear)]  # after layers 0..n-2
    if out.shape != y.shape:
        raise ValueError(f"outputs {tuple(out.shape)} and targets {tuple(y.shape)} differ in shape")
    diff = out - y
    losses = diff.square().mean(tuple(range(1, out.dim())))
    error = diff * (2.0 / (out.shape[1] * out.shape[2]))  # d loss_t / d output, [tasks, n, out]
    grads: Params = {}
    for k in range(len(taps) - 1, -1, -1):
        name = taps[k].layer
        grads[f"{name}.weight"] = error.transpose(1, 2).bmm(taps[k].inputs)  # [tasks, out, in]
        grads[f"{name}.bias"] = error.sum(1)
        if k:  # down through this layer's weights, then the activation between layers k-1 and k
            error = error.bmm(params[f"{name}.weight"])
            error = ACTIVATION_BACKWARD[activations[k - 1]](error, taps[k - 1].outputs, taps[k].inputs)
    return losses, out, {name: grads[name] for name in params}


#: Batch norm's epsilon (PyTorch's default, as in Conv4's BatchNorm2d layers).
BN_EPS = 1e-5

#: One conv block's per-task weights: conv weight ``[tasks, out, in, 3, 3]``, conv bias, batch-norm
#: scale and shift (each ``[tasks, out]``).
Block = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def grouped_conv_blocks(x: torch.Tensor, blocks: list[Block], n_stats: int | None = None,
                        channels_last: bool | None = None, eps: float = BN_EPS,
                        unfold_first: bool = False) -> torch.Tensor:
    """[3x3 conv, batch norm, ReLU, 2x2 max-pool] blocks with each task's own weights, all tasks at once.

    ``x`` ``[tasks, n, C, H, W]`` -> features ``[tasks, n, out * h * w]`` (flattened as ``nn.Flatten``
    would). The tasks are stacked along the channel axis, so each block is one grouped convolution
    (one group per task), and batch norm over the stacked channels normalises every task with its own
    statistics: those of all ``n`` images, or of the first ``n_stats`` (support statistics applied to
    the queries too). ``channels_last`` (``None``: on the CPU only) picks the faster memory order for
    these narrow convolutions; the values are the same. ``unfold_first`` computes the first convolution
    as unfolded 3x3 patches times each task's weights (one batched matrix product) instead of a grouped
    convolution: with one input channel that layer is far from the kernels' peak, and which of the two
    is faster depends on the CPU (:mod:`metaedu.algorithms.maml_plan` measures it).
    """
    tasks, n = x.shape[:2]
    last = bool(channels_last or (channels_last is None and x.device.type == "cpu"))
    h = x.transpose(0, 1).reshape(n, tasks * x.shape[2], *x.shape[3:])  # [n, tasks * C, H, W]
    if last:
        h = h.contiguous(memory_format=torch.channels_last)
    for i, (conv_w, conv_b, bn_w, bn_b) in enumerate(blocks):
        if i == 0 and unfold_first:
            h = unfolded_conv(x, conv_w, conv_b, last)  # [n, tasks * out, H, W]
        else:
            h = F.conv2d(h, conv_w.reshape(-1, *conv_w.shape[2:]), conv_b.reshape(-1), padding=1,
                         groups=tasks)  # [n, tasks * out, H, W]
        # one channel of the stacked axis = one (task, channel) pair: per-task statistics
        h = task_batch_norm(h, bn_w.reshape(-1), bn_b.reshape(-1), n_stats, eps)
        # max-pooling first is exact for a ReLU (both are monotone) and leaves the ReLU a quarter of the work
        h = F.relu(F.max_pool2d(h, 2))  # [n, tasks * out, H / 2, W / 2]
    return h.reshape(n, tasks, -1).transpose(0, 1)  # [tasks, n, out * h * w]


def unfolded_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 3x3 convolution (padding 1) with each task's own weights, as patches times weights.

    ``x`` ``[tasks, n, C, H, W]``, ``weight`` ``[tasks, out, C, 3, 3]``, ``bias`` ``[tasks, out]`` ->
    ``[n, tasks * out, H, W]`` (the stacked layout of :func:`grouped_conv_blocks`), in channels-last
    memory order when ``channels_last``.
    """
    tasks, n, c, height, width = x.shape
    out = weight.shape[1]
    cols = F.unfold(x.reshape(tasks * n, c, height, width), 3, padding=1)  # [tasks * n, C * 9, H * W]
    cols = cols.view(tasks, n, c * 9, height * width)
    w = weight.reshape(tasks, out, c * 9)
    if channels_last:  # rows = pixels, columns = channels: [tasks, n * H * W, out]
        rows = cols.transpose(2, 3).reshape(tasks, n * height * width, c * 9)
        h = torch.baddbmm(bias.unsqueeze(1), rows, w.transpose(1, 2)).view(tasks, n, height, width, out)
        h = h.permute(1, 2, 3, 0, 4).reshape(n, height, width, tasks * out)  # [n, H, W, tasks * out]
        return h.permute(0, 3, 1, 2)  # [n, tasks * out, H, W] with channels-last strides
    cols = cols.transpose(1, 2).reshape(tasks, c * 9, n * height * width)
    h = torch.baddbmm(bias.unsqueeze(2), w, cols).view(tasks, out, n, height, width)  # [tasks, out, n, H, W]
    return h.permute(2, 0, 1, 3, 4).reshape(n, tasks * out, height, width)


def task_batch_norm(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_stats: int | None = None,
                    eps: float = BN_EPS) -> torch.Tensor:
    """Batch norm of ``h [n, channels, H, W]`` with the mean and (biased) variance of its first ``n_stats``
    rows (``None``: all of them), no running statistics."""
    if n_stats is None or n_stats == h.shape[0]:
        return F.batch_norm(h, None, None, weight, bias, training=True, eps=eps)
    ref = h[:n_stats].transpose(0, 1).reshape(h.shape[1], -1)  # [channels, n_stats * H * W]
    var, mean = torch.var_mean(ref, dim=1, unbiased=False)
    scale = weight * torch.rsqrt(var + eps)  # [channels]
    return h * scale[None, :, None, None] + (bias - mean * scale)[None, :, None, None]


def conv4_forward(model: Conv4, params: Params, x: torch.Tensor, taps: list[Tap] | None = None,
                  channels_last: bool | None = None, unfold_first: bool = False) -> torch.Tensor:
    """Conv4 with per-task weights as grouped convolutions: ``[tasks, n, C, H, W]`` -> ``[tasks, n, out]``.

    ``taps`` (see the module docstring) receives the linear head, the only fully connected layer;
    ``channels_last`` and ``unfold_first``: see :func:`grouped_conv_blocks`.
    """
    blocks = [tuple(params[f"features.{i}.{j}.{kind}"] for j, kind in ((0, "weight"), (0, "bias"), (1, "weight"),
                                                                       (1, "bias")))
              for i in range(len(model.features))]
    z = grouped_conv_blocks(x, blocks, eps=model.features[0][1].eps, channels_last=channels_last,
                            unfold_first=unfold_first)  # [tasks, n, hidden * h * w]
    if model.head is None:
        return z
    out = torch.baddbmm(params["head.bias"].unsqueeze(1), z, params["head.weight"].transpose(1, 2))
    if taps is not None:
        taps.append(Tap("head", z, out))
    return out


def vmap_forward(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """Any module, vectorised over tasks with ``torch.func.vmap``."""
    return vmap(lambda p, xi: functional_call(model, p, (xi,)))(params, x)


def batched_forward(model: nn.Module, params: Params, x: torch.Tensor, route: str = "auto",
                    taps: list[Tap] | None = None, channels_last: bool | None = None,
                    unfold_first: bool = False) -> torch.Tensor:
    """Apply ``model`` with per-task weights ``params`` (``{name: [tasks, ...]}``) to ``x`` ``[tasks, n, ...]``.

    ``route`` is ``"auto"`` (the fastest one for the backbone, see the module
    docstring) or ``"vmap"`` (the generic route, for any module). A list given as
    ``taps`` receives the fully connected layers' inputs and outputs (MLP and Conv4 only).
    ``channels_last`` and ``unfold_first`` choose how Conv4 runs (:func:`grouped_conv_blocks`; the
    values are the same either way); other networks ignore them.
    """
    _check_inputs(params, x)
    if route not in ("auto", "vmap"):
        raise ValueError(f"route must be 'auto' or 'vmap', got {route!r}")
    tappable = route == "auto" and type(model) in (MLP, Conv4)
    if taps is not None and not tappable:
        raise ValueError(f"taps are recorded on the 'auto' route of MLP and Conv4 only, not for {type(model).__name__} "
                         f"on the {route!r} route")
    if route == "vmap":
        return vmap_forward(model, params, x)
    if type(model) is MLP:
        return mlp_forward(model, params, x, taps)
    if type(model) is Conv4:
        return conv4_forward(model, params, x, taps, channels_last, unfold_first)
    return vmap_forward(model, params, x)


def single_forward(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """One task, one weight set, no task dimension: ``x`` ``[n, ...]`` (the slow reference route)."""
    return functional_call(model, params, (x,))
