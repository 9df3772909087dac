"""The MANN (a controller reading and writing the LRUA memory) and its two baselines.

At step t the controller (an LSTM, or a feedforward layer) reads [x_t, y_{t-1}, r_{t-1}] and
gives a state h_t; from h_t each head emits a key k_t and a gate alpha (and, as options, a key
strength beta_t and a write vector a_t); the memory does one LRUA step
(:func:`~metaedu.algorithms.mann.memory.lrua_step`); the class scores come from [h_t, r_t].
:meth:`MANN.step` is that step, written to be read next to the paper; :meth:`MANN.forward`
computes the same function for a whole episode with the controller's input share and the
heads' layers fused into fewer, larger products (the fast path; the tests hold it to ``step``).

Options, both off in the paper's setting: ``key_strength=True`` adds the Neural Turing Machine's
sharpening, softmax(beta_t K) with beta_t >= 1 (its bias starts at beta ~ 5, so that reads are
fairly sharp from the first update); ``write_vector=True`` writes a second output a_t,
M_t(i) = M_{t-1}(i) + w^w_t(i) a_t, so that what is stored (the previous image bound to the label
that just arrived) need not equal what is looked up (the current image).

Baselines on the same inputs: an LSTM alone, and a feedforward network (no recurrence: it can
only guess).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metaedu.algorithms.mann.memory import MemoryState, initial_state, lrua_step


@dataclass
class MANNState:
    """What the MANN carries from step t-1 to step t."""

    h: torch.Tensor  # [B, hidden]  controller output h_{t-1}
    c: torch.Tensor | None  # [B, hidden]  LSTM cell (None for the feedforward controller)
    reads: torch.Tensor  # [B, H * M]  r_{t-1}, all heads' read vectors side by side
    memory: MemoryState  # M_{t-1}, w^u_{t-1}, w^r_{t-1}, w^lu_{t-1}


class MANN(nn.Module):
    """Controller + LRUA memory + softmax output.

    ``step(x_t [B, I], state)`` is one time step (read it next to the paper);
    ``forward(inputs [B, T, I])`` runs a whole episode, the same function computed faster, and
    returns logits ``[B, T, L * S]``; with ``record=True`` also a dict of ``[B, T, ...]`` tensors:
    ``read_w``, ``write_w`` ``[B, T, H, N]``, ``usage`` ``[B, T, N]``, ``memory`` ``[B, T, N, M]``
    (after the step's write), ``gate`` ``[B, T, H]`` (sigma(alpha)).
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden: int = 200,
        memory_slots: int = 128,
        memory_size: int = 40,
        read_heads: int = 4,
        gamma: float = 0.95,
        controller: str = "lstm",
        key_strength: bool = False,
        write_vector: bool = False,
    ) -> None:
        super().__init__()
        if controller not in ("lstm", "feedforward"):
            raise ValueError(f"controller must be 'lstm' or 'feedforward', got {controller!r}")
        if read_heads > memory_slots:
            raise ValueError(f"read_heads={read_heads} needs at least as many memory slots, got {memory_slots}")
        self.slots, self.size, self.heads, self.gamma = memory_slots, memory_size, read_heads, gamma
        self.controller_kind = controller
        in_size = input_size + read_heads * memory_size  # x_t, y_{t-1}, r_{t-1}
        if controller == "lstm":
            self.controller = nn.LSTMCell(in_size, hidden)
        else:
            self.controller = nn.Sequential(nn.Linear(in_size, hidden), nn.Tanh())
        self.hidden = hidden
        self.key = nn.Linear(hidden, read_heads * memory_size)
        self.gate = nn.Linear(hidden, read_heads)
        self.strength = nn.Linear(hidden, read_heads) if key_strength else None
        if self.strength is not None:  # start from fairly sharp reads, beta = 1 + softplus(4) ~ 5
            nn.init.constant_(self.strength.bias, 4.0)
        self.add = nn.Linear(hidden, read_heads * memory_size) if write_vector else None
        self.out = nn.Linear(hidden + read_heads * memory_size, output_size)

    def initial(self, batch: int, device=None, dtype=None) -> MANNState:
        """The state before the first step: zero controller state, r_0 = 0, a fresh memory."""
        zeros = torch.zeros(batch, self.hidden, device=device, dtype=dtype)
        return MANNState(
            zeros,
            zeros if self.controller_kind == "lstm" else None,
            torch.zeros(batch, self.heads * self.size, device=device, dtype=dtype),
            initial_state(batch, self.slots, self.size, self.heads, device=device, dtype=dtype),
        )

    def step(self, x_t: torch.Tensor, state: MANNState) -> tuple[torch.Tensor, MANNState, torch.Tensor]:
        """One time step: ``x_t`` ``[B, I]`` (image and previous label) -> logits ``[B, L * S]``, the new
        state, and the write weights w^w_t ``[B, H, N]``."""
        B, H, M = x_t.shape[0], self.heads, self.size
        z = torch.cat([x_t, state.reads], dim=-1)  # the controller reads [x_t, y_{t-1}, r_{t-1}]
        if self.controller_kind == "lstm":
            h, c = self.controller(z, (state.h, state.c))  # [B, hidden]
        else:
            h, c = self.controller(z), None
        keys = torch.tanh(self.key(h)).view(B, H, M)  # k_t
        gate = self.gate(h)  # alpha, before the sigmoid [B, H]
        strength = 1 + F.softplus(self.strength(h)) if self.strength is not None else None  # beta_t >= 1
        values = torch.tanh(self.add(h)).view(B, H, M) if self.add is not None else None  # a_t (else k_t is written)
        memory, r, write_w = lrua_step(state.memory, keys, gate, self.gamma, strength, values)  # equations 1-6
        reads = r.flatten(1)  # r_t [B, H * M]
        logits = self.out(torch.cat([h, reads], dim=-1))  # scores from [h_t, r_t]
        return logits, MANNState(h, c, reads, memory), write_w

    def forward(self, inputs: torch.Tensor, record: bool = False):
        """A whole episode ``[B, T, I]``: the fast path, the same function as T calls of :meth:`step`."""
        B, T, I = inputs.shape
        H, M, n_hidden = self.heads, self.size, self.hidden
        state = initial_state(B, self.slots, M, H, device=inputs.device, dtype=inputs.dtype)
        reads = inputs.new_zeros(B, H * M)  # r_0
        # The controller's input is [x_t, y_{t-1}, r_{t-1}]. The x, y part is known for every step in
        # advance, so its share of the first layer is computed for the whole episode in one product;
        # only the r_{t-1} (and, for the LSTM, h_{t-1}) share is left inside the loop. Same function.
        if self.controller_kind == "lstm":
            cell = self.controller
            pre = F.linear(inputs, cell.weight_ih[:, :I], cell.bias_ih + cell.bias_hh)  # [B, T, 4 hidden]
            recurrent = torch.cat([cell.weight_ih[:, I:], cell.weight_hh], dim=1).t()  # [H M + hidden, 4 hidden]
            h = c = inputs.new_zeros(B, n_hidden)
        else:
            layer = self.controller[0]
            pre = F.linear(inputs, layer.weight[:, :I], layer.bias)  # [B, T, hidden]
            recurrent = layer.weight[:, I:].t()  # [H M, hidden]
        # the heads' outputs (keys, gates, strengths, write vectors) from h_t in one product
        parts = [self.key, self.gate] + [m for m in (self.strength, self.add) if m is not None]
        head_w = torch.cat([m.weight for m in parts]).t()  # [hidden, sum of sizes]
        head_b = torch.cat([m.bias for m in parts])
        sizes = [m.out_features for m in parts]
        # one view per step; unbind's backward assembles the steps' gradients once, where indexing pre[:, t]
        # would write each step's gradient into a zero tensor of the whole episode (T times per update)
        pre_steps = pre.unbind(1)
        hs, all_reads = [], []
        trace = {"read_w": [], "write_w": [], "usage": [], "memory": [], "gate": []}
        for t in range(T):
            if self.controller_kind == "lstm":
                gates = torch.addmm(pre_steps[t], torch.cat([reads, h], dim=-1), recurrent)  # [B, 4 hidden]
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)  # [B, hidden]
            else:
                h = torch.tanh(torch.addmm(pre_steps[t], reads, recurrent))
            emitted = torch.addmm(head_b, h, head_w).split(sizes, dim=-1)
            keys = torch.tanh(emitted[0]).view(B, H, M)  # k_t [B, H, M]
            gate = emitted[1]  # alpha [B, H]
            strength = 1 + F.softplus(emitted[2]) if self.strength is not None else None
            values = torch.tanh(emitted[-1]).view(B, H, M) if self.add is not None else None
            state, r, write_w = lrua_step(state, keys, gate, self.gamma, strength, values)  # a_t [B, H, M] or k_t
            reads = r.flatten(1)  # [B, H * M]
            hs.append(h)
            all_reads.append(reads)
            if record:
                for name, value in (
                    ("read_w", state.read_w),
                    ("write_w", write_w),
                    ("usage", state.usage),
                    ("memory", state.memory),
                    ("gate", torch.sigmoid(gate)),
                ):
                    trace[name].append(value.detach())
        logits = self.out(torch.cat([torch.stack(hs, 1), torch.stack(all_reads, 1)], dim=-1))  # [B, T, L * S]
        if record:
            return logits, {name: torch.stack(v, 1) for name, v in trace.items()}
        return logits


class LSTMBaseline(nn.Module):
    """An LSTM with a softmax output on the same inputs: ``[B, T, I]`` -> ``[B, T, L * S]``."""

    def __init__(self, input_size: int, output_size: int, hidden: int = 200) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, batch_first=True)
        self.out = nn.Linear(hidden, output_size)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(inputs)[0])


class FeedforwardBaseline(nn.Module):
    """Two hidden layers applied to each step alone: it has no way to remember a binding."""

    def __init__(self, input_size: int, output_size: int, hidden: int = 200) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, output_size),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)
