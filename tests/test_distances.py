"""The shared comparisons of the metric-learning methods, the one nearest neighbour, and evaluation mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metaedu.nn.distances import nearest_neighbour
from metaedu.runtime import evaluation_mode


def brute_force_nn(z_support, y_support, z_query, metric, allowed=None):
    """One query at a time, in float64, from the definitions."""
    tasks, n_query = z_query.shape[:2]
    out = []
    for t in range(tasks):
        row = []
        for q in range(n_query):
            best, best_d = None, float("inf")
            for s in range(z_support.shape[1]):
                if allowed is not None and not bool(allowed[q, s]):
                    continue
                a, b = z_query[t, q].double(), z_support[t, s].double()
                d = float((a - b).norm()) if metric == "euclidean" else -float(a @ b / (a.norm() * b.norm()))
                if d < best_d:
                    best, best_d = s, d
            row.append(y_support[t, best] if best is not None else y_support[t, 0])
        out.append(torch.stack(row))
    return torch.stack(out)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_nearest_neighbour_matches_a_loop(metric):
    g = torch.Generator().manual_seed(0)
    zs, zq = torch.randn(3, 7, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    ys = torch.randint(0, 3, (3, 7), generator=g)
    assert torch.equal(nearest_neighbour(zs, ys, zq, metric), brute_force_nn(zs, ys, zq, metric))


def test_nearest_neighbour_respects_allowed_items_and_keeps_label_strings():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 6, 3, generator=g)
    labels = torch.randint(0, 5, (2, 6, 4), generator=g)  # labels of four characters
    earlier = torch.ones(6, 6, dtype=torch.bool).tril(-1)
    out = nearest_neighbour(z, labels, z, "euclidean", allowed=earlier)
    assert out.shape == (2, 6, 4)
    for t in range(2):
        for q in range(1, 6):
            d = [float((z[t, q] - z[t, s]).norm()) for s in range(q)]
            assert torch.equal(out[t, q], labels[t, d.index(min(d))])
    with pytest.raises(ValueError, match="metric"):
        nearest_neighbour(z, labels[..., 0], z, "manhattan")


def test_evaluation_mode_restores_every_submodule_even_after_an_error():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(0.5))
    net.train()
    net[1].eval()  # a frozen part deliberately left in evaluation mode
    with pytest.raises(RuntimeError):
        with evaluation_mode(net, lambda x: x):  # a plain function is left alone
            assert not any(m.training for m in net.modules())
            raise RuntimeError("inside")
    assert net.training and net[0].training and not net[1].training and net[2].training
