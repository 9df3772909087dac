"""Runtime choices made once per notebook or script: device, seeds, threads, cache, mode.

Every algorithm's settings are a dataclass with two presets, ``quick()`` (a
laptop CPU in lecture time) and ``full()`` (a GPU, the paper's setting);
:func:`preset` picks one from the notebook's ``MODE`` parameter.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

MODES = ("quick", "full")

T = TypeVar("T")


def get_device(request: str | torch.device = "auto") -> torch.device:
    """Return the torch device to compute on.

    ``"auto"`` picks CUDA, then Apple's MPS, then the CPU. An explicit request
    (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``) for a device this machine
    does not have is an error rather than a silent fall-back, so a full-mode run
    never crawls on the CPU by accident.
    """
    if isinstance(request, torch.device):
        request = str(request)
    request = request.strip().lower()
    if request == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = request.split(":")[0]
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {request!r} was requested but CUDA is not available on this machine; "
                "use DEVICE='auto' or 'cpu'"
            )
        dev = torch.device(request)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {request!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return dev
    if kind == "mps":
        if not _mps_available():
            raise RuntimeError(f"device {request!r} was requested but Apple MPS is not available on this machine")
        return torch.device("mps")
    raise ValueError(f"unknown device {request!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU generator seeded alike.

    With ``deterministic=True`` PyTorch is asked for deterministic kernels too
    (slower on a GPU, and some operations then raise instead of running).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
    return torch.Generator().manual_seed(seed)


def set_threads(n: int | None = None) -> int:
    """Fix PyTorch's CPU thread count and return it.

    Small models on a laptop run fastest with few threads, and PyTorch's
    default (one per core) slows down badly when another process competes for
    the cores. ``None`` reads ``METAEDU_THREADS`` and otherwise uses
    ``min(4, cores)``.
    """
    if n is None:
        env = os.environ.get("METAEDU_THREADS")
        n = int(env) if env else min(4, os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    torch.set_num_threads(n)
    return n


def progress_bars() -> bool:
    """Whether training shows progress bars: yes, unless ``METAEDU_PROGRESS=0``.

    ``metaedu run`` and the test suite set it to 0 for the kernels they start, so executed
    notebooks keep no progress-bar residue in their saved outputs; a live session shows bars.
    """
    return os.environ.get("METAEDU_PROGRESS", "1") not in ("0", "false", "no")


def cache_dir() -> Path:
    """Folder for built data sets and checkpoints: ``$METAEDU_CACHE`` or the user's cache folder."""
    env = os.environ.get("METAEDU_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
        path = Path(base) / "metaedu"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_mode(mode: str) -> str:
    """Validate a notebook's ``MODE`` parameter."""
    if mode not in MODES:
        raise ValueError(f"MODE must be one of {MODES}, got {mode!r}")
    return mode


def preset(settings_cls: type[T], mode: str, **overrides) -> T:
    """Return ``settings_cls.quick()`` or ``settings_cls.full()``, with fields overridden.

    Every algorithm's settings dataclass defines both classmethods; this is the
    one place where a notebook's ``MODE`` turns into hyper-parameters.
    """
    check_mode(mode)
    settings = getattr(settings_cls, mode)()
    unknown = set(overrides) - set(getattr(settings, "__dataclass_fields__", {}))
    if unknown:
        raise TypeError(f"{settings_cls.__name__} has no field(s) {sorted(unknown)}")
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings
