"""One LSTM cell step as contiguous per-gate operations, for LSTMs run over many coordinates at once.

The coordinatewise optimizers of lectures 01 and 02 apply one small LSTM to every coordinate of a
network's parameters: tens of thousands of rows per step. ``nn.LSTMCell`` on the CPU computes the
four gates as one ``[n, 4H]`` matrix and applies the nonlinearities to its column slices, strided
views that PyTorch's elementwise kernels handle several times slower than contiguous blocks.
:func:`lstm_cell` computes the same function,

    i, f, o = sigmoid(W_i x + U_i h + b_i), ...,   g = tanh(W_g x + U_g h + b_g)
    c' = f * c + i * g,   h' = o * tanh(c')

with one matrix-product pair per gate (contiguous ``[n, H]`` results) and tanh(z) = 2 sigmoid(2z) - 1.
It reads the parameters of an ``nn.LSTMCell`` (gate order i, f, g, o), so initialisation and state
dicts are PyTorch's; results agree with ``nn.LSTMCell`` to float rounding (tested).
"""

from __future__ import annotations

import torch
from torch import nn


#: Below this many rows PyTorch's own cell is as fast (fewer, larger kernels); from here on the gate-by-gate step wins.
GATEWISE_FROM = 2048


def lstm_cell(cell: nn.LSTMCell, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
    """``cell(x, state)`` computed gate by gate: ``x [n, in]``, ``state = (h, c)`` each ``[n, H]`` -> ``(h', c')``.

    For fewer than :data:`GATEWISE_FROM` rows it simply calls ``cell`` (the same function, no faster there).
    """
    h, c = state
    H = cell.hidden_size
    if x.dim() != 2 or x.shape[1] != cell.input_size or h.shape != (x.shape[0], H) or c.shape != h.shape:
        raise ValueError(f"lstm_cell expects x [n, {cell.input_size}] and h, c [n, {H}], got {tuple(x.shape)}, "
                         f"{tuple(h.shape)}, {tuple(c.shape)}")
    if x.shape[0] < GATEWISE_FROM:
        return cell(x, (h, c))
    bias = cell.bias_ih + cell.bias_hh if cell.bias else None
    pre = []
    for k in range(4):  # gate order of nn.LSTMCell: input, forget, cell candidate, output
        rows = slice(k * H, (k + 1) * H)
        z = x @ cell.weight_ih[rows].t() if bias is None else torch.addmm(bias[rows], x, cell.weight_ih[rows].t())
        pre.append(torch.addmm(z, h, cell.weight_hh[rows].t()))  # [n, H], contiguous
    i, f, o = torch.sigmoid(pre[0]), torch.sigmoid(pre[1]), torch.sigmoid(pre[3])
    g = 2 * torch.sigmoid(2 * pre[2]) - 1  # tanh
    c_next = f * c + i * g
    h_next = o * (2 * torch.sigmoid(2 * c_next) - 1)  # o * tanh(c')
    return h_next, c_next
