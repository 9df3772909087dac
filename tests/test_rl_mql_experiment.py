"""Meta-Q-Learning's experiment against slow references: the set context against a per-step loop, the critic's
TD3 target against the sub-networks called one by one, adaptation of many goals at once against one goal at a
time, the per-goal proximal term against mql.proximal_term, and the rollout's reward history."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from metaedu.nn.functional import per_task
from metaedu.rl import mql_adaptation as ma
from metaedu.rl import mql_experiment as mx
from metaedu.rl.envs import PointNavigation
from metaedu.rl.mql import proximal_term
from metaedu.rl.rollout import Trajectories, rollout

SMALL = replace(mx.MQLSettings.quick(), horizon=4, hidden=(8,), context=3, train_goals=3, meta_steps=6,
                collect_every=3, warmup_episodes=2, test_goals=2, new_episodes=2, adapt_steps=3,
                old_batch_episodes=2, batch_episodes=4)


def shared(model) -> dict:
    return {k: v.detach().clone() for k, v in per_task(dict(model.named_parameters()), 1).items()}


def episodes(n: int, h: int, seed: int) -> Trajectories:
    gen = torch.Generator().manual_seed(seed)
    return Trajectories(torch.randn(n, h + 1, 2, generator=gen), 0.1 * torch.randn(n, h, 2, generator=gen),
                        -torch.rand(n, h, generator=gen))


def test_the_set_context_is_the_mean_embedding_of_the_earlier_transitions():
    model = mx.build(SMALL, seed=0)
    ep = episodes(3, 4, 0)
    z = mx.contexts(model, shared(model), ep.obs[None], ep.actions[None], ep.rewards[None], 0.1)[0]  # [3, 5, 3]
    for b in range(3):
        torch.testing.assert_close(z[b, 0], torch.zeros(3))
        for t in range(1, 5):  # one transition at a time through the plain module
            feats = [torch.cat([ep.obs[b, i], ep.actions[b, i] / 0.1, ep.rewards[b, i:i + 1], ep.obs[b, i + 1]])
                     for i in range(t)]
            torch.testing.assert_close(z[b, t], torch.stack([model.phi(f) for f in feats]).mean(0), atol=1e-6, rtol=1e-5)


def test_the_critic_loss_regresses_to_the_td3_target_computed_by_hand():
    model = mx.build(SMALL, seed=1)
    params = shared(model)
    target = {k: v + 0.05 for k, v in params.items()}  # different target weights, so a mix-up shows
    ep = episodes(2, 4, 1)
    loss = mx.critic_losses(model, params, target, ep, 1, SMALL, torch.Generator().manual_seed(5), 0.1)[0]
    noise = SMALL.target_noise * torch.randn(1, 2, 4, 2, generator=torch.Generator().manual_seed(5))[0]
    tgt = model.__class__(SMALL.hidden, SMALL.context)
    tgt.load_state_dict({k: v[0] for k, v in target.items()})
    with torch.no_grad():
        by_hand = []
        for b in range(2):
            for t in range(4):
                def z_of(net, upto):  # mean of phi over transitions before `upto`
                    if upto == 0:
                        return torch.zeros(3)
                    return torch.stack([net.phi(torch.cat([ep.obs[b, i], ep.actions[b, i] / 0.1, ep.rewards[b, i:i + 1],
                                                           ep.obs[b, i + 1]])) for i in range(upto)]).mean(0)

                s, s2 = (torch.cat([ep.obs[b, i], torch.tensor([i / 4])]) for i in (t, t + 1))
                z2 = z_of(tgt, t + 1)
                a2 = (torch.tanh(tgt.actor(torch.cat([s2, z2]))) + noise[b, t].clamp(-0.5, 0.5)).clamp(-1, 1)
                q_next = torch.minimum(tgt.q1(torch.cat([s2, a2, z2])), tgt.q2(torch.cat([s2, a2, z2])))[0]
                y = ep.rewards[b, t] + (0.0 if t == 3 else SMALL.discount * q_next)  # the last step ends the episode
                x = torch.cat([s, ep.actions[b, t] / 0.1, z_of(model, t)])
                by_hand.append((model.q1(x)[0] - y) ** 2 + (model.q2(x)[0] - y) ** 2)
    torch.testing.assert_close(loss, torch.stack(by_hand), atol=1e-5, rtol=1e-4)


def test_adapting_many_goals_at_once_equals_one_goal_at_a_time():
    settings = replace(SMALL, target_noise=1e-12)  # no smoothing noise: runs with other batch sizes draw alike
    model = mx.build(settings, seed=2)
    theta = shared(model)
    new = episodes(4, 4, 2)  # 2 goals x 2 episodes, goal-major
    old = episodes(5, 4, 3)
    lam = torch.tensor([0.3, 0.6])
    keys = list(theta)
    actor = [k for k in keys if k.startswith("actor.")]
    critic = [k for k in keys if not k.startswith("actor.")]
    beta = torch.ones(2, 5, 4)
    both = ma.adapted(model, {k: v.expand(2, *v.shape[1:]) for k, v in theta.items()}, old, new, beta, lam,
                      "new_only", settings, torch.Generator().manual_seed(0), actor, critic)
    for g in range(2):
        one_new = Trajectories(new.obs[2 * g:2 * g + 2], new.actions[2 * g:2 * g + 2], new.rewards[2 * g:2 * g + 2])
        alone = ma.adapted(model, theta, old, one_new, beta[g:g + 1], lam[g:g + 1], "new_only", settings,
                           torch.Generator().manual_seed(0), actor, critic)
        for k in keys:
            torch.testing.assert_close(both[k][g], alone[k][0], atol=1e-5, rtol=1e-4)
        assert any(not torch.equal(alone[k], theta[k]) for k in keys), "adaptation moved nothing"


def test_the_proximal_term_per_goal_equals_the_modules_and_bad_settings_are_refused():
    model = mx.build(SMALL, seed=3)
    anchor = {n: p.detach() + 0.1 * torch.randn_like(p) for n, p in model.named_parameters()}
    params = {n: torch.stack([p.detach(), anchor[n]]) for n, p in model.named_parameters()}  # goal 1 sits on the anchor
    per_goal = ma.proximal_per_task(params, {k: v[None] for k, v in anchor.items()}, list(anchor))
    torch.testing.assert_close(per_goal[0], proximal_term(model, anchor).detach())
    assert float(per_goal[1]) == 0.0
    with pytest.raises(ValueError, match="discount"):
        replace(SMALL, discount=1.0)
    with pytest.raises(ValueError, match="adapt_steps"):
        replace(SMALL, adapt_steps=0)
    with pytest.raises(ValueError, match="one set per goal"):
        mx.run_episodes(model, {k: v.expand(3, *v.shape[1:]) for k, v in shared(model).items()},
                        torch.zeros(2, 2), 1, SMALL, torch.Generator())


def test_a_reward_reading_controller_sees_the_rewards_so_far():
    env = PointNavigation(2, max_steps=5)
    env.set_goals(torch.tensor([[0.3, 0.0], [0.0, -0.2]]))
    seen = []

    def controller(t, obs, actions, rewards):
        assert rewards.shape == (2, t)
        seen.append(rewards.clone())
        return torch.full((2, 2), 0.05)

    out = rollout(env, controller, with_rewards=True)
    for t, r in enumerate(seen):
        torch.testing.assert_close(r, out.rewards[:, :t])


def test_the_experiment_runs_end_to_end_and_scores_every_arm_on_the_same_goals():
    model, theta, old, owners, curve = mx.meta_train(SMALL, seed=0)
    assert old.obs.shape[0] == owners.shape[0] == SMALL.train_goals * (SMALL.warmup_episodes + 1)
    goals = ma.test_goals(SMALL, 0)
    result = ma.adapt(model, theta, old, goals, SMALL, seed=0)
    assert set(result.returns) == set(ma.ARMS) and all(v.shape == (2,) for v in result.returns.values())
    assert result.weights.shape == (2, old.obs.shape[0], SMALL.horizon) and (result.weights > 0).all()
    assert ((result.ess > 0) & (result.ess <= 1)).all()


def test_the_shipped_meta_trained_model_reproduces_its_recorded_score():
    from metaedu.rl import mql_reference

    model, theta, old, old_goals, record = mql_reference.load()
    settings = mx.MQLSettings.quick()
    assert old.obs.shape == (record["old_episodes"], settings.horizon + 1, 2) and old_goals.shape == (old.obs.shape[0], 2)
    score = mql_reference.score(model, theta, mql_reference.validation_goals(settings), settings)
    assert score == pytest.approx(record["validation_score"], rel=1e-4, abs=1e-4)
    assert score > record["stay_at_start_score"]  # the context tells goals apart: better than standing still
    with pytest.raises(ValueError, match="other settings"):
        mql_reference.load(replace(settings, meta_steps=settings.meta_steps + 1))
