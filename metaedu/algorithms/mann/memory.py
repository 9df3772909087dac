"""The LRUA memory of Santoro et al. (2016): the six equations of one step, batched over episodes.

An external memory M (``memory_slots`` rows of ``memory_size`` numbers) is written and read
with the controller's key k_t, in this order at each step t:

1. write weights, a gated mix of the previous read weights and the least-used slots:
   w^w_t = sigma(alpha) w^r_{t-1} + (1 - sigma(alpha)) w^lu_{t-1}          (:func:`write_weights`)
2. before writing, the least-used slot (smallest w^u_{t-1}) is set to zero, then
   M_t(i) = M_{t-1}(i) + w^w_t(i) k_t  for every slot i          (:func:`clear_least_used`, :func:`write_memory`)
3. read weights by a softmax over cosine similarity:
   K(k, M(i)) = k . M(i) / (||k|| ||M(i)||),   w^r_t(i) = exp K(k_t, M_t(i)) / sum_j exp K(k_t, M_t(j))
                                                                          (:func:`read_weights`)
4. the read vector r_t = sum_i w^r_t(i) M_t(i)                          (:func:`read_memory`)
5. usage decays and adds this step's reads and writes:
   w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t                                 (:func:`update_usage`)
6. least-used weights: w^lu_t(i) = 1 if w^u_t(i) <= m(w^u_t, n) else 0, where m(v, n) is the
   n-th smallest entry of v and n the number of reads (heads)            (:func:`least_used_weights`)

:func:`lrua_step` runs the six in order. With several heads every head has its own key, gate
and read/write weights; step 5 sums the heads' weights, and step 6 marks the n least-used
slots for all heads (exactly as in the equations above).

Symbols -> names: k_t = ``keys`` ``[B, H, M]``; alpha = ``gate`` ``[B, H]``; M_t = ``memory``
``[B, N, M]``; w^r, w^w = ``read_w``, ``write_w`` ``[B, H, N]``; w^u = ``usage`` ``[B, N]``;
w^lu = ``least_used`` ``[B, N]``; n = H heads; N slots of size M.

Two details the equations leave open, fixed here: when usages tie, the slots with the lower
index count as less used (so exactly n slots are marked; at the start, when every usage is
zero, slots 0 .. n-1); the memory starts as a small constant (1e-6) so that cosine
similarity is defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def cosine_similarity(keys: torch.Tensor, memory: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """K(k, M(i)) for every head and slot: ``keys [B, H, M]``, ``memory [B, N, M]`` -> ``[B, H, N]``."""
    dots = torch.bmm(keys, memory.transpose(1, 2))  # [B, H, N]
    norms = keys.norm(dim=-1, keepdim=True) * memory.norm(dim=-1).unsqueeze(1)  # [B, H, N]
    return dots / norms.clamp_min(eps)


def read_weights(keys: torch.Tensor, memory: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
    """w^r(i) = softmax_i K(k, M(i)) (times beta when given, ``[B, H]``) -> ``[B, H, N]``."""
    similarity = cosine_similarity(keys, memory)
    if strength is not None:
        similarity = similarity * strength.unsqueeze(-1)
    return torch.softmax(similarity, dim=-1)


def read_memory(read_w: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """r = sum_i w^r(i) M(i): ``[B, H, N]``, ``[B, N, M]`` -> ``[B, H, M]``."""
    return torch.bmm(read_w, memory)


def update_usage(usage: torch.Tensor, read_w: torch.Tensor, write_w: torch.Tensor, gamma: float) -> torch.Tensor:
    """w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t (heads summed): -> ``[B, N]``."""
    return gamma * usage + read_w.sum(1) + write_w.sum(1)


def least_used_weights(usage: torch.Tensor, n: int) -> torch.Tensor:
    """w^lu(i) = 1 for the ``n`` slots of smallest usage (ties: lower index first), else 0: ``[B, N]``."""
    if not 1 <= n <= usage.shape[-1]:
        raise ValueError(f"cannot mark the {n} least-used slots of a memory with {usage.shape[-1]} slots")
    if n == 1:  # argmin returns the first (lowest-index) smallest entry
        return F.one_hot(usage.detach().argmin(dim=-1), usage.shape[-1]).to(usage.dtype)
    # a stable sort keeps equal usages in index order
    smallest = torch.sort(usage.detach(), dim=-1, stable=True).indices[..., :n]  # [B, n]
    return torch.zeros_like(usage).scatter_(-1, smallest, 1.0)


def write_weights(gate: torch.Tensor, prev_read_w: torch.Tensor, prev_least_used: torch.Tensor) -> torch.Tensor:
    """w^w_t = sigma(alpha) w^r_{t-1} + (1 - sigma(alpha)) w^lu_{t-1}: ``gate [B, H]`` -> ``[B, H, N]``."""
    g = torch.sigmoid(gate).unsqueeze(-1)  # [B, H, 1]
    return g * prev_read_w + (1 - g) * prev_least_used.unsqueeze(1)


def clear_least_used(memory: torch.Tensor, prev_usage: torch.Tensor) -> torch.Tensor:
    """Zero the row of the least-used slot (smallest w^u_{t-1}, lowest index on ties): ``[B, N, M]``."""
    slot = prev_usage.detach().argmin(dim=-1)  # [B], the first smallest on ties
    return memory.index_put(
        (torch.arange(memory.shape[0], device=memory.device), slot), memory.new_zeros(())
    )  # out of place: the old memory stays intact for autograd


def write_memory(memory: torch.Tensor, write_w: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """M_t(i) = M_{t-1}(i) + sum_heads w^w_t(i) k_t: -> ``[B, N, M]``."""
    return torch.baddbmm(memory, write_w.transpose(1, 2), keys)


@dataclass
class MemoryState:
    """What the memory carries from one step to the next."""

    memory: torch.Tensor  # [B, N, M]
    usage: torch.Tensor  # [B, N]  w^u_{t-1}
    read_w: torch.Tensor  # [B, H, N]  w^r_{t-1}
    least_used: torch.Tensor  # [B, N]  w^lu_{t-1}


def initial_state(
    batch: int, slots: int, size: int, heads: int, device=None, init: float = 1e-6, dtype=None
) -> MemoryState:
    """Memory filled with a small constant, no usage, no previous read."""
    usage = torch.zeros(batch, slots, device=device, dtype=dtype)
    return MemoryState(
        memory=torch.full((batch, slots, size), init, device=device, dtype=dtype),
        usage=usage,
        read_w=torch.zeros(batch, heads, slots, device=device, dtype=dtype),
        least_used=least_used_weights(usage, heads),
    )


def lrua_step(
    state: MemoryState,
    keys: torch.Tensor,
    gate: torch.Tensor,
    gamma: float,
    strength: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
) -> tuple[MemoryState, torch.Tensor, torch.Tensor]:
    """One step of the LRUA memory (steps 1-6 of the module docstring).

    Args: ``keys [B, H, M]``, ``gate [B, H]`` (alpha, before the sigmoid), ``strength [B, H]`` or None,
    ``values [B, H, M]``: what is written (the keys themselves when None, as in the paper).
    Returns: the new state, the read vectors ``[B, H, M]`` and the write weights ``[B, H, N]``.
    """
    heads = keys.shape[1]
    write_w = write_weights(gate, state.read_w, state.least_used)  # 1. [B, H, N]
    memory = clear_least_used(state.memory, state.usage)  # 2. [B, N, M]
    memory = write_memory(memory, write_w, keys if values is None else values)
    read_w = read_weights(keys, memory, strength)  # 3. [B, H, N]
    reads = read_memory(read_w, memory)  # 4. [B, H, M]
    usage = update_usage(state.usage, read_w, write_w, gamma)  # 5. [B, N]
    least_used = least_used_weights(usage, heads)  # 6. [B, N]
    return MemoryState(memory, usage, read_w, least_used), reads, write_w
