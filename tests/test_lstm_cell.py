"""The gate-by-gate LSTM step (metaedu.nn.lstm) against PyTorch's nn.LSTMCell, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metaedu.nn.lstm import GATEWISE_FROM, lstm_cell


@pytest.mark.parametrize("input_size, bias", [(2, True), (4, True), (20, True), (3, False)])
@pytest.mark.parametrize("rows", [11, GATEWISE_FROM + 3])  # PyTorch's own cell below the threshold, ours above
def test_lstm_cell_equals_torch_in_values_and_gradients(input_size, bias, rows):
    torch.manual_seed(0)
    cell = nn.LSTMCell(input_size, 7, bias=bias).double()
    x = torch.randn(rows, input_size, dtype=torch.float64, requires_grad=True)
    h = torch.randn(rows, 7, dtype=torch.float64, requires_grad=True)
    c = torch.randn(rows, 7, dtype=torch.float64, requires_grad=True)
    ours, theirs = lstm_cell(cell, x, (h, c)), cell(x, (h, c))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    weights = torch.randn(2, rows, 7, dtype=torch.float64)  # a loss that depends on both outputs
    inputs = [x, h, c, *cell.parameters()]
    g_ours = torch.autograd.grad((weights[0] * ours[0] + weights[1] * ours[1]).sum(), inputs)
    g_theirs = torch.autograd.grad((weights[0] * theirs[0] + weights[1] * theirs[1]).sum(), inputs)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b)


def test_lstm_cell_names_bad_shapes():
    cell = nn.LSTMCell(2, 5)
    with pytest.raises(ValueError, match="expects x"):
        lstm_cell(cell, torch.zeros(3, 4), (torch.zeros(3, 5), torch.zeros(3, 5)))
    with pytest.raises(ValueError, match="expects x"):
        lstm_cell(cell, torch.zeros(3, 2), (torch.zeros(2, 5), torch.zeros(2, 5)))
