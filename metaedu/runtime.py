"""Runtime choices made once per notebook or script: device, seeds, threads, cache, mode.

Every algorithm's settings are a dataclass with two presets, ``quick()`` (a
laptop CPU in lecture time) and ``full()`` (a GPU, the paper's setting);
:func:`preset` picks one from the notebook's ``MODE`` parameter. Also here,
because every layer of the package needs it: :func:`evaluation_mode`, the one
way to run modules in evaluation mode for a while.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TypeVar

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


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block as if PyTorch had just been seeded with ``seed``; the global RNG is restored after.

    For building modules: PyTorch's layers draw their initial weights from the global
    generator, so ``with seeded(seed): net = Conv4()`` gives the same weights for the same
    seed, whatever ran before, and leaves the caller's random state exactly as it was.
    Library code uses this instead of ``torch.manual_seed``; only :func:`seed_everything`,
    called by a notebook or script, sets the global state for good.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    mps_state = torch.mps.get_rng_state() if _mps_available() else None
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            yield
        finally:
            if mps_state is not None:
                torch.mps.set_rng_state(mps_state)


def set_threads(n: int | None = None) -> int:
    """Fix PyTorch's CPU thread count and return it (and keep freed memory for reuse, see below).

    Small models on a laptop run fastest with few threads, and PyTorch's
    default (one per core) slows down badly when another process competes for
    the cores. ``None`` reads ``METAEDU_THREADS`` and otherwise uses
    ``min(4, cores)``. It also calls :func:`keep_freed_memory`, the other
    CPU-side setting every lecture wants.
    """
    if n is None:
        env = os.environ.get("METAEDU_THREADS")
        n = int(env) if env else min(4, os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    torch.set_num_threads(n)
    keep_freed_memory()
    return n


_FREED_MEMORY_LIMIT: int | None = None  # the limit keep_freed_memory applied in this process, if any
# After a kept-memory block: the thresholds glibc's own adjustment reaches once it has freed a mapped buffer
# of its largest adjustable size (DEFAULT_MMAP_THRESHOLD_MAX on 64 bits, malloc.c): buffers up to 32 MB are
# reused from the heap, larger ones mapped. mallopt turns that adjustment off for good, so the block sets it.
_AFTER_BLOCK_MMAP, _AFTER_BLOCK_TRIM = 32 << 20, 64 << 20


@functools.lru_cache(maxsize=None)
def _libc_function(name: str):
    """A function of the C library through ctypes, or None where it has none (glibc's are missing on
    macOS, musl, Windows). Looked up once per name: MAML's multi-pass plans use it on every call."""
    import ctypes
    import ctypes.util

    library = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(library) if library else None
        return getattr(libc, name, None)
    except OSError:
        return None


def _mallopt():
    return _libc_function("mallopt")


def _set_thresholds(limit: int, trim: int | None = None) -> bool:
    mallopt = _mallopt()
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's parameter numbers (malloc.h)
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, trim or limit))


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Let the C allocator (glibc) keep freed blocks below ``limit`` bytes for reuse instead of
    returning them to the operating system. Returns whether the setting was applied.

    A training step allocates and frees the same activation buffers of a few megabytes again and
    again; by default glibc hands each one back to the system and the next step faults its pages
    in anew, which on a laptop CPU costs about a third as much system time as the step's own
    arithmetic (measured on the lectures' Conv4 training). Elsewhere (macOS, musl) this does nothing.
    The setting lasts for the process; :func:`freed_memory_kept` applies it to one block only.
    """
    global _FREED_MEMORY_LIMIT
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be a positive number of bytes, got {limit!r}")
    applied = _set_thresholds(limit)
    if applied:
        _FREED_MEMORY_LIMIT = limit
    return applied


def freed_memory_limit() -> int | None:
    """The limit :func:`keep_freed_memory` set in this process (None: glibc's own thresholds)."""
    return _FREED_MEMORY_LIMIT


@contextmanager
def freed_memory_kept(limit: int = 1 << 30, warn: bool = True) -> Iterator[bool]:
    """:func:`keep_freed_memory` for one block only: an opt-in for a whole run
    (``benchmarks/maml_speed.py --keep-freed-memory``), and what each multi-pass MAML meta-gradient on
    the CPU runs inside (:meth:`metaedu.algorithms.maml_core.MAML.run_plan`).

    Yields whether it was applied. Inside, freed buffers below ``limit`` bytes are kept for reuse
    (no page faults for a repeated 60 MB activation); after the block the thresholds go back to what
    they were: the process-wide limit an earlier :func:`keep_freed_memory` set, or else the values glibc's
    own adjustment settles at (buffers up to 32 MB reused, larger ones mapped; glibc no longer adjusts
    them itself once ``mallopt`` has been called, so the block leaves them there), and the
    memory kept is given back (``malloc_trim``) unless that earlier limit holds. Without glibc's
    ``mallopt`` (macOS, musl, Windows) it runs the block unchanged, and warns with the reason if ``warn``.
    """
    import warnings

    global _FREED_MEMORY_LIMIT
    before = _FREED_MEMORY_LIMIT
    applied = keep_freed_memory(limit)
    if not applied and warn:
        warnings.warn("freed_memory_kept: this C library has no glibc mallopt (not Linux with glibc?), so freed "
                      "memory is handled as usual and the block runs unchanged", RuntimeWarning, stacklevel=3)
    try:
        yield applied
    finally:
        if applied:
            if before is None:
                _set_thresholds(_AFTER_BLOCK_MMAP, _AFTER_BLOCK_TRIM)
            else:
                _set_thresholds(before)
            _FREED_MEMORY_LIMIT = before
            trim = _libc_function("malloc_trim")
            if before is None and trim is not None:
                trim(0)


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
    one place where a notebook's ``MODE`` turns into hyper-parameters. The
    overrides go through ``dataclasses.replace``, so the class's ``__post_init__``
    checks them like any other value (an unknown name is a ``TypeError``, an
    impossible value a ``ValueError``).
    """
    check_mode(mode)
    if not dataclasses.is_dataclass(settings_cls):
        raise TypeError(f"{settings_cls.__name__} is not a settings dataclass")
    settings = getattr(settings_cls, mode)()
    unknown = set(overrides) - {f.name for f in dataclasses.fields(settings)}
    if unknown:
        raise TypeError(f"{settings_cls.__name__} has no field(s) {sorted(unknown)}")
    return dataclasses.replace(settings, **overrides)


def check_settings(settings, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
                   choices: dict[str, tuple] | None = None) -> None:
    """Reject impossible values of a settings dataclass with a message naming the field.

    ``positive`` fields must be > 0 (a tuple: non-empty, every entry > 0; ``None`` is allowed
    where the field's type admits it), ``non_negative`` fields >= 0, and ``choices`` maps a
    field to its allowed values. A settings class calls this from ``__post_init__``.
    """
    name = type(settings).__name__
    for field in positive:
        value = getattr(settings, field)
        values = value if isinstance(value, tuple) else (value,)
        if value is not None and (not values or not all(_is_number(v) and v > 0 for v in values)):
            raise ValueError(f"{name}.{field} must be {'positive numbers' if isinstance(value, tuple) else 'positive'}, "
                             f"got {value!r}")
    for field in non_negative:
        value = getattr(settings, field)
        if not (_is_number(value) and value >= 0):
            raise ValueError(f"{name}.{field} must be zero or positive, got {value!r}")
    for field, allowed in (choices or {}).items():
        value = getattr(settings, field)
        if value not in allowed:
            names = [repr(a) for a in allowed]
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
            raise ValueError(f"{name}.{field} must be {listed}, got {value!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@contextmanager
def evaluation_mode(*modules) -> Iterator[None]:
    """Run a block with ``modules`` in evaluation mode; every submodule's own mode is restored after.

    Batch norm then uses its running statistics (and dropout is off). Arguments that are not
    ``torch.nn.Module`` (e.g. a plain encoder function) are left alone, so callers need not check.
    Restoring each submodule's flag, not one flag for the whole model, keeps a frozen part that
    was deliberately left in evaluation mode as it was.
    """
    saved = [(m, m.training) for module in modules if isinstance(module, torch.nn.Module) for m in module.modules()]
    try:
        for module in modules:
            if isinstance(module, torch.nn.Module):
                module.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training
