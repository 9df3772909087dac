"""The curiosity search's pieces against hand computations: grid moves and rewards, the Q-learning update,
the primitives (counts, nearest neighbours by brute force, an online forward model that converges), and
the search's bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch

from metaedu.rl.curiosity import (
    CONSTANT,
    PRIMITIVES,
    Curiosity,
    CuriositySettings,
    GridWorlds,
    program_name,
    programs,
    q_learning_update,
    search,
)


def test_grid_moves_stop_at_walls_and_reward_only_the_goal():
    env = GridWorlds(torch.tensor([[0, 1], [2, 2]]), size=3, max_steps=3)
    env.reset()
    reward, done = env.step(torch.tensor([0, 1]))  # right; left into the wall
    assert env.position.tolist() == [[0, 1], [0, 0]]
    assert reward.tolist() == [1.0, 0.0] and done.tolist() == [True, False]
    env.reset(done)
    assert env.position.tolist() == [[0, 0], [0, 0]]
    env.step(torch.tensor([3, 2]))  # up into the wall; down
    _, done = env.step(torch.tensor([3, 2]))
    assert env.position.tolist() == [[0, 0], [2, 0]] and done.tolist() == [False, True]  # copy 1 ran out of steps
    with pytest.raises(ValueError, match="inside"):
        GridWorlds(torch.tensor([[3, 0]]), size=3, max_steps=5)


def test_q_learning_update_by_hand():
    q = torch.zeros(2, 4, 4)
    q[0, 1] = torch.tensor([0.0, 2.0, 1.0, 0.0])
    q[1, 3] = torch.tensor([5.0, 0.0, 0.0, 0.0])
    q_learning_update(q, torch.tensor([0, 2]), torch.tensor([3, 1]), torch.tensor([1.0, 0.5]), torch.tensor([1, 3]),
                      torch.tensor([False, True]), lr=0.5, discount=0.9)
    assert float(q[0, 0, 3]) == pytest.approx(0.5 * (1 + 0.9 * 2.0))
    assert float(q[1, 2, 1]) == pytest.approx(0.5 * 0.5)  # the goal ends the bootstrap


def settings(**kw) -> CuriositySettings:
    return CuriositySettings(**{"size": 4, "memory": 5, "neighbours": 2, **kw})


def test_count_and_neighbour_primitives_by_hand():
    gen = torch.Generator().manual_seed(0)
    c = Curiosity(("count",), 1, settings(), gen)
    cell, action = torch.tensor([0]), torch.tensor([0])
    values = [float(c.primitive("count", cell, action, torch.tensor([5]))) for _ in range(3)]
    assert values == pytest.approx([1.0, 1 / math.sqrt(2), 1 / math.sqrt(3)])
    nb = Curiosity(("neighbour",), 1, settings(), gen)
    visited = [0, 1, 5, 15]
    for v in visited:
        nb.primitive("neighbour", cell, action, torch.tensor([v]))
    query = 10
    coords = torch.tensor([[v // 4, v % 4] for v in visited], dtype=torch.float32) / 3
    target = torch.tensor([query // 4, query % 4], dtype=torch.float32) / 3
    brute = sorted(float((p - target).norm()) for p in coords)[:2]
    assert float(nb.primitive("neighbour", cell, action, torch.tensor([query]))) == pytest.approx(sum(brute) / 2, rel=1e-5)


def test_the_online_forward_model_learns_a_repeated_transition():
    c = Curiosity(("forward", "random_network"), 1, settings(), torch.Generator().manual_seed(1))
    cell, action, nxt = torch.tensor([5]), torch.tensor([0]), torch.tensor([6])
    forward = [float(c.primitive("forward", cell, action, nxt)) for _ in range(200)]
    distill = [float(c.primitive("random_network", cell, action, nxt)) for _ in range(200)]
    assert forward[-1] < 1e-3 * forward[0] and distill[-1] < 1e-3 * distill[0]


def test_a_program_averages_its_normalised_primitives_and_shifts_them():
    c = Curiosity(("count", CONSTANT), 2, settings(), torch.Generator())
    value = c(torch.tensor([0, 0]), torch.tensor([0, 0]), torch.tensor([3, 3]))
    # first visit: count 1 / its own maximum = 1, constant 0; mean 0.5, shifted by -1
    torch.testing.assert_close(value, torch.tensor([-0.5, -0.5]))
    none = Curiosity((), 2, settings(), torch.Generator())
    torch.testing.assert_close(none(torch.tensor([0, 0]), torch.tensor([0, 0]), torch.tensor([1, 1])), torch.zeros(2))
    with pytest.raises(ValueError, match="unknown primitives"):
        Curiosity(("entropy",), 1, settings(), torch.Generator())


def test_the_search_space_and_the_search_bookkeeping():
    space = programs()
    assert len(space) == len(set(space)) == 2 + len(PRIMITIVES) + math.comb(len(PRIMITIVES), 2)
    assert program_name(()) == "none" and program_name(("count", "forward")) == "count + forward"
    s = settings(max_steps=10, inner_episodes=3, environments=2, seeds=2)
    result = search(s, candidates=[(), ("count",), (CONSTANT,)])
    means = [float(result.returns[k].mean()) for k in result.ranking]
    assert means == sorted(means, reverse=True) and set(result.ranking) == {"none", "count", "constant"}
    assert result.env_steps == 3 * (2 * 2) * (3 * 10)  # programs x runs x lifetime
    assert all(float(v.sum()) == 2 * 3 * 10 for v in result.visits.values())  # the first environment's 2 agents
    with pytest.raises(ValueError, match="neighbours"):
        CuriositySettings(neighbours=10, memory=5)
