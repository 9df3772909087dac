"""MAML's execution plans (issue 25): every plan gives the per-task loop's meta-gradient; the measured
choice is cached, keyed, read back and overridden; the scoped allocator setting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from metaedu import runtime
from metaedu.algorithms import maml_plan
from metaedu.algorithms.llama import LLAMA
from metaedu.algorithms.maml import MAML, GlyphSettings, SinusoidSettings, glyph_learner, per_task_meta_loss
from metaedu.algorithms.maml_plan import FIRST_LAYERS, LAYOUTS, Plan
from metaedu.nn.backbones import MLP, Conv4
from metaedu.nn.functional import grouped_conv_blocks
from metaedu.tasks.episodes import EpisodeSampler
from metaedu.tasks.regression import SinusoidTasks

D = torch.float64
ALL_CONV_PLANS = [Plan(loop=True)] + [Plan(size, layout=layout, first_layer=first) for size in (1, 2, None)
                                      for layout in LAYOUTS for first in FIRST_LAYERS]


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAEDU_CACHE", str(tmp_path))
    monkeypatch.delenv(maml_plan.ENV, raising=False)  # measure (conftest imposes the fixed plan elsewhere)
    return tmp_path


def conv_case(glyphs, **variant):
    torch.manual_seed(0)
    learner = MAML(Conv4(1, hidden=4, n_classes=3, track_running_stats=False).double(), "cross_entropy", 0.4,
                   **variant)
    eps = EpisodeSampler(glyphs.split("background"), 3, 1, 2, seed=1).sample(5)  # 5 tasks: 2 per pass leaves one
    eps.x_support, eps.x_query = eps.x_support.to(D), eps.x_query.to(D)
    return learner, eps


def sine_case(**variant):
    torch.manual_seed(0)
    learner = MAML(MLP((1, 8, 8, 1)).double(), "mse", 0.05, **variant)
    tasks = SinusoidTasks(5, 6, seed=3).sample(5)
    for k in ("x_support", "y_support", "x_query", "y_query"):
        setattr(tasks, k, getattr(tasks, k).to(D))
    return learner, tasks


def assert_plan_matches_loop(learner, tasks, plan, steps):
    looped = torch.autograd.grad(per_task_meta_loss(learner, tasks, steps), list(learner.parameters()))
    reference_loss = per_task_meta_loss(learner, tasks, steps).detach()
    learner.zero_grad(set_to_none=True)
    loss, out = learner.run_plan(plan, tasks, steps)
    assert out.shape[:2] == tasks.x_query.shape[:2] and not out.requires_grad
    torch.testing.assert_close(loss, reference_loss)
    scale = max(float(b.abs().max()) for b in looped)
    for p, b in zip(learner.parameters(), looped):
        torch.testing.assert_close(p.grad, b, rtol=1e-9, atol=1e-10 * scale)


@pytest.mark.parametrize("plan", ALL_CONV_PLANS, ids=str)
def test_every_conv4_plan_gives_the_loops_meta_gradient(glyphs, plan):
    learner, eps = conv_case(glyphs)
    assert_plan_matches_loop(learner, eps, plan, steps=2)


@pytest.mark.parametrize("variant", [{}, {"first_order": True}, {"meta_sgd": True}, {"anil": True}], ids=str)
@pytest.mark.parametrize("plan", ["loop", "1", "2", "all", "2/analytic", "all/analytic"])
def test_every_plan_gives_the_loops_meta_gradient_for_each_variant(variant, plan):
    learner, tasks = sine_case(**variant)
    assert_plan_matches_loop(learner, tasks, Plan.parse(plan), steps=2)


def test_unfolded_first_layer_equals_the_grouped_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 2, 12, 12, generator=g, dtype=D)
    blocks = [tuple(torch.randn(*s, generator=g, dtype=D) for s in ((3, 5, 2, 3, 3), (3, 5), (3, 5), (3, 5))),
              tuple(torch.randn(*s, generator=g, dtype=D) for s in ((3, 5, 5, 3, 3), (3, 5), (3, 5), (3, 5)))]
    for last in (False, True):
        grouped = grouped_conv_blocks(x, blocks, channels_last=last)
        torch.testing.assert_close(grouped_conv_blocks(x, blocks, channels_last=last, unfold_first=True), grouped)


def test_plan_text_round_trips_and_bad_plans_are_named():
    for text in ("loop", "all/contiguous/grouped", "2/channels_last/unfold", "all/contiguous/grouped/analytic"):
        assert str(Plan.parse(text)) == text
    assert Plan.parse("4/unfold") == Plan(4, layout="contiguous", first_layer="unfold")
    assert Plan.parse("all/analytic") == Plan(inner_gradient="analytic")
    assert str(Plan.parse("all/autograd")) == "all/contiguous/grouped"  # the default is not spelt out
    for bad, words in (("fast", "must start with"), ("0", "tasks_per_pass"), ("2/rows", "is not one of"),
                       ("2/contiguous/channels_last", "given twice")):
        with pytest.raises(ValueError, match=words):
            Plan.parse(bad)
    with pytest.raises(ValueError, match="plan"):
        GlyphSettings(plan="quickest")
    with pytest.raises(ValueError, match="not both"):
        MAML(MLP(), "mse", task_chunk=2, plan="loop")
    with pytest.raises(ValueError, match="plan must be"):
        MAML(MLP(), "mse", plan=3)
    assert MAML(MLP(), "mse", task_chunk=3).plan == Plan(3)
    with pytest.raises(ValueError, match="inner_gradient"):
        Plan(inner_gradient="numeric")


def test_analytic_plans_are_refused_where_the_gradients_are_not_an_mlps_mse(glyphs):
    learner, eps = conv_case(glyphs)
    with pytest.raises(ValueError, match="writes out the inner gradients of an MLP's MSE; this learner"):
        learner.run_plan(Plan.parse("all/analytic"), eps, 1)
    _, tasks = sine_case()
    for other in (LLAMA(MLP((1, 8, 1)), "mse", 0.05, eta=1e-3), MAML(MLP((1, 8, 1)), lambda o, y: (o - y).abs().mean((1, 2)))):
        assert not maml_plan.analytic_allowed(other)
        with pytest.raises(ValueError, match="is not one"):
            other.double().run_plan(Plan.parse("all/analytic"), tasks, 1)
    assert maml_plan.analytic_allowed(sine_case()[0])
    assert not maml_plan.analytic_allowed(MAML(MLP((1, 8, 1), activation=torch.nn.GELU), "mse"))


def test_loop_is_refused_where_a_subclass_changes_the_objective():
    learner = LLAMA(MLP((1, 8, 1)), "mse", 0.05, eta=1e-3)
    assert not learner.loop_allowed() and MAML(MLP(), "mse").loop_allowed()
    _, tasks = sine_case()
    with pytest.raises(ValueError, match="LLAMA changes it"):
        learner.double().run_plan(Plan(loop=True), tasks, 1)


def test_autotune_keeps_the_fastest_and_the_loop_is_a_candidate(monkeypatch):
    """A fake clock: each plan costs what the table says per task; the tuner must pick the cheapest,
    stop doubling once a larger pass is slower, and leave the parameters' gradients as they were."""
    learner, tasks = sine_case()
    cost = {"loop": 5.0, "1/contiguous/grouped": 6.0, "2/contiguous/grouped": 4.0, "4/contiguous/grouped": 4.5,
            "2/contiguous/grouped/analytic": 4.2}  # the written-out gradients tried at the best size
    now = [0.0]
    real_run = learner.run_plan

    sizes = {}

    limits = set()

    def fake_run(plan, part, steps):
        sizes[str(plan)] = part.x_support.shape[0]
        limits.add(runtime.freed_memory_limit())  # timed in the steady state: freed buffers kept (glibc)
        now[0] += cost.get(str(plan), 100.0) * part.x_support.shape[0] / 1000  # cost: ms per task
        return real_run(plan, part, steps)

    monkeypatch.setattr(learner, "run_plan", fake_run)
    monkeypatch.setattr(maml_plan, "_clock", lambda device: lambda: now[0])
    marker = [torch.full_like(p, 7.0) for p in learner.parameters()]
    for p, m in zip(learner.parameters(), marker):
        p.grad = m.clone()
    before = runtime.freed_memory_limit()
    plan, timings = maml_plan.autotune(learner, tasks, 1, budget=0.5)
    assert str(plan) == "2/contiguous/grouped"
    assert set(timings) == set(cost)  # 4 per pass was slower than 2 and all 5 would cost over budget / 10
    assert timings["loop"] == pytest.approx(5.0)
    assert sizes == {"loop": 4, "1/contiguous/grouped": 4, "2/contiguous/grouped": 4, "4/contiguous/grouped": 4,
                     "2/contiguous/grouped/analytic": 4}
    if sys.platform.startswith("linux"):
        assert len(limits) == 1 and None not in limits
    assert runtime.freed_memory_limit() == before  # and the allocator is left as it was
    sizes.clear()
    for p, m in zip(learner.parameters(), marker):
        assert torch.equal(p.grad, m)

    plan, timings = maml_plan.autotune(learner, tasks, 1)  # the default budget: measuring all 5 is cheap enough
    assert str(plan) == "2/contiguous/grouped" and timings["all/contiguous/grouped"] == pytest.approx(100.0)
    cost["2/contiguous/grouped/analytic"] = 3.0  # written-out gradients win where they are fastest
    assert str(maml_plan.autotune(learner, tasks, 1)[0]) == "2/contiguous/grouped/analytic"
    cost["loop"] = 1.0  # the loop wins where it is fastest
    assert maml_plan.autotune(learner, tasks, 1)[0] == Plan(loop=True)
    # a budget spent early still measures MIN_CANDIDATES plans: the loop and the first two batched ones
    plan, timings = maml_plan.autotune(learner, tasks, 1, budget=0.0)
    assert list(timings) == ["loop", "1/contiguous/grouped", "2/contiguous/grouped"] and plan == Plan(loop=True)


def test_auto_plan_is_cached_keyed_read_back_and_overridden(private_cache, monkeypatch):
    learner, tasks = sine_case()
    learner.zero_grad(set_to_none=True)
    learner.meta_gradient(tasks, 1)
    auto_grads = [p.grad.clone() for p in learner.parameters()]
    entries = json.loads((private_cache / maml_plan.CACHE_FILE).read_text())["plans"]
    key = maml_plan.plan_key(learner, tasks, 1)
    assert len(entries) == 1 and entries[0]["key"] == key and "loop" in entries[0]["ms_per_task"]
    chosen = Plan.parse(entries[0]["plan"])
    assert learner.plan_for(tasks, 1) == chosen
    assert key["threads"] == torch.get_num_threads() and key["support"] == list(tasks.x_support.shape)
    assert key["machine"] == maml_plan.machine() and key["torch"] == torch.__version__
    learner.zero_grad(set_to_none=True)
    learner.run_plan(Plan(loop=True), tasks, 1)
    for p, g in zip(learner.parameters(), auto_grads):  # tuning left no trace in the gradient
        torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-12)

    def no_tuning(*args, **kwargs):
        raise AssertionError("the plan should have come from the cache")

    monkeypatch.setattr(maml_plan, "autotune", no_tuning)
    fresh, _ = sine_case()
    assert fresh.plan_for(tasks, 1) == chosen  # a new learner (a new process alike) reads the file

    # another key (a planted entry for 2 threads says 'loop'): read only where the key matches
    other = dict(key, threads=key["threads"] + 1)
    maml_plan.store_plan(other, Plan(loop=True), {"loop": 1.0})
    assert maml_plan.cached_plan(other) == Plan(loop=True) and maml_plan.cached_plan(key) == chosen
    with pytest.raises(AssertionError, match="from the cache"):
        sine_case()[0].plan_for(SinusoidTasks(5, 6, seed=3).sample(3), 1)  # another shape: measured anew

    # the settings' plan overrides the cache: no lookup, no tuning
    monkeypatch.setattr(maml_plan, "choose", no_tuning)
    assert glyph_learner(GlyphSettings.quick()).plan == "auto"
    pinned = glyph_learner(GlyphSettings(plan="2/contiguous/unfold", hidden=4))
    assert pinned.plan_for(tasks, 1) == Plan(2, layout="contiguous", first_layer="unfold")
    assert SinusoidSettings(plan="loop").plan == "loop"


def test_the_environment_imposes_a_plan_on_auto_learners_only(private_cache, monkeypatch, glyphs):
    learner, eps = conv_case(glyphs)
    monkeypatch.setattr(maml_plan, "choose", lambda *a, **k: pytest.fail("nothing should be measured"))
    monkeypatch.setenv(maml_plan.ENV, "fixed")
    assert learner.plan_for(eps, 1) == Plan(4, layout="channels_last")  # Conv4 on the CPU
    assert sine_case()[0].plan_for(SinusoidTasks(5, 6).sample(3), 1) == Plan()
    monkeypatch.setenv(maml_plan.ENV, "2/unfold")
    assert learner.plan_for(eps, 1) == Plan(2, first_layer="unfold")
    assert conv_case(glyphs, plan="loop")[0].plan_for(eps, 1) == Plan(loop=True)  # an explicit plan wins
    monkeypatch.setenv(maml_plan.ENV, "sometimes")
    with pytest.raises(ValueError, match="METAEDU_MAML_PLAN='sometimes'"):
        learner.plan_for(eps, 1)
    assert not (private_cache / maml_plan.CACHE_FILE).exists()


def test_freed_memory_kept_is_scoped(monkeypatch):
    assert runtime.freed_memory_limit() is None or runtime.freed_memory_limit() > 0
    before = runtime.freed_memory_limit()
    if sys.platform.startswith("linux"):
        with runtime.freed_memory_kept(1 << 28) as applied:
            assert applied and runtime.freed_memory_limit() == 1 << 28
        assert runtime.freed_memory_limit() == before
    monkeypatch.setattr(runtime, "_mallopt", lambda: None)
    with pytest.warns(RuntimeWarning, match="no glibc mallopt"):
        with runtime.freed_memory_kept() as applied:
            assert applied is False
    with pytest.raises(ValueError, match="positive number of bytes"):
        runtime.keep_freed_memory(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_freed_memory_kept_stops_page_faults_inside_the_block_only():
    """Inside the block a repeated 48 MB buffer is reused without page faults; after it the memory kept is
    given back (the resident size falls), a new 96 MB buffer is mapped and faulted in anew each time, and a
    16 MB one is reused (glibc's own steady state for buffers up to 32 MB)."""
    script = (
        "import resource, torch\n"
        "from metaedu import runtime\n"
        "def rss():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) * 1024\n"
        "def faults(mb):\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    for _ in range(20):\n"
        "        x = torch.ones(mb * 256 * 1024)\n"
        "        del x\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "with runtime.freed_memory_kept():\n"
        "    faults(48)\n"
        "    inside, rss_inside = faults(48), rss()\n"
        "rss_after = rss()\n"
        "print(inside, faults(96), rss_inside - rss_after, faults(16))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    inside, after, released, small_after = map(int, out.split())
    assert inside < 1000  # 48 MB is 12,288 pages of 4 kB: none faulted in again
    assert after > 15 * 24 * 1024  # 96 MB = 24,576 pages, faulted in on most of the 20 allocations
    assert released > 40 * 2**20
    # a 16 MB buffer (4,096 pages) is reused after the block, as glibc would: faulted in on the first few of
    # the 20 allocations while glibc's dynamic thresholds settle (2 or 3 times seen), not on every one (81,920)
    assert small_after < 5 * 4096


def test_multi_pass_plans_keep_freed_memory_during_the_call_only(monkeypatch, glyphs):
    """A CPU plan of several passes runs inside ``freed_memory_kept`` (so a pass reuses the previous pass's
    buffers instead of faulting them in anew) and leaves the allocator as it found it; one pass does not
    touch it; without glibc the call runs unchanged and silently."""
    learner, eps = conv_case(glyphs)
    entered = []
    real = runtime.freed_memory_kept

    def spy(*args, **kwargs):
        entered.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime, "freed_memory_kept", spy)
    before = runtime.freed_memory_limit()
    for plan in (Plan(loop=True), Plan(2, layout="channels_last")):
        assert_plan_matches_loop(learner, eps, plan, 1)
    assert entered == [{"warn": False}] * 2 and runtime.freed_memory_limit() == before
    assert_plan_matches_loop(learner, eps, Plan(), 1)  # one pass over the whole meta-batch
    assert len(entered) == 2
    monkeypatch.setattr(runtime, "_mallopt", lambda: None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_plan_matches_loop(learner, eps, Plan(2), 1)
    assert runtime.freed_memory_limit() == before
