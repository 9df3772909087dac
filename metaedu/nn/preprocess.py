"""Gradient and loss preprocessing of Andrychowicz et al. (2016), reused by Ravi & Larochelle (2017).

Gradients span many orders of magnitude, which an LSTM's inputs handle badly. Each
scalar x becomes two numbers::

    (log|x| / p, sgn(x))   if |x| >= e^-p
    (-1, e^p x)            otherwise

so magnitude and sign are separated and tiny values stay finite (p = 10 in both papers).
"""

from __future__ import annotations

import math

import torch

#: The papers' p.
P = 10.0


def preprocess(x: torch.Tensor, p: float = P) -> torch.Tensor:
    """``[...]`` -> ``[..., 2]`` as above; differentiable almost everywhere."""
    threshold = math.exp(-p)
    big = x.abs() >= threshold
    first = torch.where(big, torch.log(x.abs().clamp_min(threshold)) / p, torch.full_like(x, -1.0))
    second = torch.where(big, torch.sign(x), x * math.exp(p))
    return torch.stack([first, second], dim=-1)
