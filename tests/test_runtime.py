import dataclasses
import subprocess
import sys

import pytest
import torch

from metaedu import runtime


def test_auto_device_is_available():
    dev = runtime.get_device("auto")
    assert dev.type in ("cpu", "cuda", "mps")
    torch.zeros(1, device=dev)


def test_explicit_absent_device_is_a_clear_error():
    absent = f"cuda:{torch.cuda.device_count()}"  # one past the last device, or any CUDA device on a CPU machine
    with pytest.raises(RuntimeError, match="requested but"):
        runtime.get_device(absent)
    with pytest.raises(ValueError, match="unknown device"):
        runtime.get_device("tpu")


def test_seed_everything_repeats_draws():
    g1 = runtime.seed_everything(3)
    a = torch.rand(4), torch.rand(2, generator=g1)
    g2 = runtime.seed_everything(3)
    b = torch.rand(4), torch.rand(2, generator=g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_threads_and_cache(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    try:
        assert runtime.set_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            runtime.set_threads(0)
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("METAEDU_CACHE", str(tmp_path / "c"))
    assert runtime.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


@dataclasses.dataclass
class _Settings:
    steps: int = 1

    @classmethod
    def quick(cls):
        return cls(steps=10)

    @classmethod
    def full(cls):
        return cls(steps=1000)


def test_preset_picks_mode_and_overrides():
    assert runtime.preset(_Settings, "quick").steps == 10
    assert runtime.preset(_Settings, "full", steps=5).steps == 5
    with pytest.raises(ValueError, match="MODE"):
        runtime.preset(_Settings, "medium")
    with pytest.raises(TypeError, match="no field"):
        runtime.preset(_Settings, "quick", stepz=3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_keep_freed_memory_stops_page_faults_of_repeated_buffers():
    """Buffers of 48 MB and 12 MB allocated and freed in a loop (a training step's activations) fault their pages
    in anew each time with glibc's defaults, and only the first times once freed memory is kept."""
    script = (
        "import resource, sys, torch\n"
        "from metaedu import runtime\n"
        "applied = runtime.keep_freed_memory() if sys.argv[1] == 'keep' else None\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(30):\n"
        "    x, y = torch.ones(12 * 1024 * 1024), torch.ones(3 * 1024 * 1024)\n"
        "    del x, y\n"
        "print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    faults = {}
    for mode in ("plain", "keep"):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True).stdout
        applied, count = out.split()
        faults[mode] = int(count)
    assert applied == "True"
    assert faults["plain"] > 20 * 12 * 1024  # the 48 MB buffer alone is 12,288 pages of 4 kB
    assert faults["keep"] < faults["plain"] / 4
