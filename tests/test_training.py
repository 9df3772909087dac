import pytest
import torch

from metaedu.training import train


def make_problem(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(seed)
    w_true = torch.tensor([[1.0, -2.0, 0.5]])

    def step(i):
        x = torch.randn(16, 3, generator=gen)
        loss = ((model(x) - x @ w_true.T) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    return model, opt, gen, step


def test_training_reduces_loss_and_records_history():
    model, opt, gen, step = make_problem()
    hist = train(step, 60, state={"model": model}, progress=False)
    assert len(hist.steps) == 60 and hist["loss"][-1] < 0.05 * hist["loss"][0]
    assert len(hist.smoothed("loss", 5)) == 60


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    model_a, opt_a, gen_a, step_a = make_problem()
    train(step_a, 40, state={"m": model_a, "o": opt_a, "g": gen_a}, progress=False)

    ckpt = tmp_path / "run.pt"
    model_b, opt_b, gen_b, step_b = make_problem()
    train(step_b, 25, state={"m": model_b, "o": opt_b, "g": gen_b}, checkpoint=ckpt, checkpoint_every=5, progress=False)
    # a new process would rebuild everything from scratch, then resume from the file
    model_c, opt_c, gen_c, step_c = make_problem(seed=1)
    hist = train(step_c, 40, state={"m": model_c, "o": opt_c, "g": gen_c}, checkpoint=ckpt, progress=False)
    torch.testing.assert_close(model_c.weight, model_a.weight)
    assert hist.steps[0] == 0 and hist.steps[-1] == 39 and len(hist.steps) == 40


def test_time_budget_stops_after_the_step_that_uses_it_up(tmp_path, monkeypatch):
    from metaedu import training

    clock = {"now": 100.0}
    monkeypatch.setattr(training, "_now", lambda: clock["now"])  # a fake clock: no wall-clock dependence
    calls = []

    def step(i):
        calls.append(i)
        clock["now"] += 0.03  # every step takes 30 ms
        return {"loss": torch.tensor(1.0)}

    ckpt = tmp_path / "budget.pt"
    hist = train(step, 1000, checkpoint=ckpt, checkpoint_every=10_000, log_every=7, progress=False, max_seconds=0.1)
    assert calls == [0, 1, 2, 3]  # 0.09 s after three steps, 0.12 s after the fourth: it stops there
    assert hist.steps_done == 4 and hist.steps[-1] == 3 and hist.seconds == pytest.approx(0.12)
    assert torch.load(ckpt, weights_only=False)["step"] == 4  # the stopping point is saved, to resume from
    assert train(step, 5, progress=False).steps_done == 5  # no budget: every step


def test_nan_guard_names_the_step(tmp_path):
    def step(i):
        return {"loss": torch.tensor(float("nan") if i == 3 else 1.0)}

    with pytest.raises(FloatingPointError, match="loss became nan at step 3"):
        train(step, 10, progress=False)


def test_checkpoint_from_another_setup_is_refused(tmp_path):
    model, opt, gen, step = make_problem()
    ckpt = tmp_path / "x.pt"
    train(step, 2, state={"model": model}, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="lacks"):
        train(step, 4, state={"model": model, "optimizer": opt}, checkpoint=ckpt, progress=False)


def test_validation_keeper_keeps_and_restores_the_best_weights():
    from metaedu.training import ValidationKeeper

    model = torch.nn.Linear(1, 1, bias=False)
    scores = iter([10.0, 30.0, 20.0, 30.0])  # the best comes at the 2nd score; a later tie does not replace it
    keeper = ValidationKeeper(model, lambda: next(scores), every=2)
    for done in range(1, 8):
        with torch.no_grad():
            model.weight.fill_(done)  # the weights after `done` steps
        keeper(done, last=done == 7)
    assert keeper.steps == [2, 4, 6, 7] and keeper.best == (4, 30.0)
    keeper.restore()
    assert model.weight.item() == 4.0
    copy = ValidationKeeper(model, lambda: 0.0, every=2)
    copy.load_state_dict(keeper.state_dict())
    assert copy.best == keeper.best
    with pytest.raises(ValueError, match="interval"):
        ValidationKeeper(model, lambda: 0.0, every=0)
