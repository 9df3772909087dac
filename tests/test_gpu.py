"""GPU smoke tests (marker gpu; skipped where CUDA is absent): the CUDA path gives what the CPU path gives.

Each check runs a piece of the package on the GPU and on the CPU from the same seed and compares:
episode sampling, ProtoNet training, MAML's meta-gradient through grouped convolutions, the MANN's
fused forward pass, and a checkpointed run interrupted and resumed on the GPU.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from metaedu.runtime import get_device, preset, seeded
from tiny_data import tiny_images

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def exact_float32():
    """Compare like with like: no TensorFloat-32 in matrix products and convolutions."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_samplers_draw_the_same_episodes_on_the_gpu():
    from metaedu.tasks.episodes import EpisodeSampler

    cuda = get_device("cuda")
    on_gpu = EpisodeSampler(tiny_images(), 5, 2, 3, rotations=(0, 90), device=cuda, seed=1).sample(4)
    on_cpu = EpisodeSampler(tiny_images(), 5, 2, 3, rotations=(0, 90), device="cpu", seed=1).sample(4)
    assert on_gpu.x_support.device.type == "cuda" and on_gpu.y_query.device.type == "cuda"
    assert torch.equal(on_gpu.x_support.cpu(), on_cpu.x_support) and torch.equal(on_gpu.y_query.cpu(), on_cpu.y_query)


def test_protonet_trains_on_the_gpu_as_on_the_cpu():
    from metaedu.algorithms import protonet

    s = replace(preset(protonet.ProtoNetSettings, "quick"), hidden=8, train_way=5, train_query=2, steps=5)
    gpu_model, history = protonet.train_protonet(s, tiny_images(), device="cuda", seed=2, progress=False)
    cpu_model, _ = protonet.train_protonet(s, tiny_images(), device="cpu", seed=2, progress=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in history["loss"])
    assert next(gpu_model.parameters()).device.type == "cuda"
    for (name, a), b in zip(gpu_model.state_dict().items(), cpu_model.state_dict().values()):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-4, msg=name)


def test_maml_meta_gradient_through_grouped_convolutions_matches_the_cpu():
    from metaedu.algorithms import maml
    from metaedu.tasks.episodes import EpisodeSampler

    s = replace(preset(maml.GlyphSettings, "quick"), hidden=4, n_way=3, n_query=2, meta_batch=4)
    grads = {}
    for device in ("cpu", "cuda"):
        with seeded(0):
            learner = maml.glyph_learner(s, image_size=16).double()
        learner = learner.to(device)
        tasks = EpisodeSampler(tiny_images(), 3, 1, 2, device=device, seed=3).sample(4)
        tasks.x_support, tasks.x_query = tasks.x_support.double(), tasks.x_query.double()
        learner.zero_grad()
        learner.meta_gradient(tasks, steps=2)
        grads[device] = [p.grad.detach().cpu() for p in learner.parameters()]
    for a, b in zip(grads["cuda"], grads["cpu"]):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_mann_fused_forward_on_the_gpu_matches_the_cpu():
    from metaedu.algorithms import mann

    with seeded(0):
        model = mann.MANN(
            11, 3, hidden=9, memory_slots=7, memory_size=5, read_heads=2, key_strength=True, write_vector=True
        ).double()
    inputs = torch.rand(3, 8, 11, generator=torch.Generator().manual_seed(4), dtype=torch.double)
    expected = model(inputs)
    torch.testing.assert_close(model.cuda()(inputs.cuda()).cpu(), expected, rtol=1e-9, atol=1e-10)


def test_an_interrupted_gpu_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """The checkpoint is read onto the CPU; the run in progress (learned optimizer) goes back to the GPU."""
    import sys

    from metaedu import training
    from metaedu.algorithms import learned_optimizer as lo
    from metaedu.tasks.optimizees import QuadraticProblem
    from test_checkpoints import REAL_TRAIN, Interrupted, interrupting

    monkeypatch.setenv("METAEDU_CACHE", str(tmp_path / "cache"))
    s = lo.LearnedOptimizerSettings(hidden=4, horizon=6, unroll=2, quad_dim=3)

    def run(checkpoint):
        with seeded(0):
            opt = lo.CoordinatewiseLSTM.from_settings(s)
        opt = opt.cuda()
        lo.meta_train(
            opt,
            QuadraticProblem(dim=3, device="cuda", seed=1),
            s,
            episodes=2,
            meta_batch=4,
            progress=False,
            checkpoint=checkpoint,
        )
        return {k: v.detach().cpu() for k, v in opt.state_dict().items()}

    uninterrupted = run(None)
    path = tmp_path / "lo.pt"
    with monkeypatch.context() as patch:
        stand_in = interrupting(4)  # in the middle of the second run
        patch.setattr(training, "train", stand_in)
        for module in [m for n, m in sys.modules.items() if n.startswith("metaedu.")]:
            if getattr(module, "train", None) is REAL_TRAIN:
                patch.setattr(module, "train", stand_in)
        with pytest.raises(Interrupted):
            run(path)
    resumed = run(path)
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=1e-6, atol=1e-7, msg=key)
