"""Where full-mode training saves its progress, and how an interrupted run finds it again.

A long run (full mode on a GPU: hours) must survive an interruption. Every training
function of the package takes ``checkpoint=`` and hands the file to
:func:`metaedu.training.train`, which saves every ``checkpoint_every`` steps and at the
end, and resumes from the file when it exists. This module decides which file::

    path = resolve(checkpoint, "protonet", settings, data, seed)   # in a training function
    history = train(step, settings.steps, state={...}, checkpoint=path)

``checkpoint`` is what the caller passed:

* ``None`` (the default): follow ``settings.checkpoint``, which ``full()`` presets turn on
  and ``quick()`` presets leave off. On: the file :func:`checkpoint_path` names; off: none.
* ``True`` / ``False``: a named file / no file, whatever the settings say.
* a path: that file (the caller takes care that it belongs to this run).

**Names.** :func:`checkpoint_path` names the file by a hash of everything that decides the
run: the method's name, the settings class and every field but ``checkpoint``, and the
inputs the caller lists (the training data, the seed, a model built outside, the samplers'
generators as they stand before the first step). Change any of them and a new run starts
in a new file; change none and an interrupted run resumes. A JSON file beside it records
what was hashed, for people. Files live under ``cache_dir()/checkpoints``.

**What a checkpoint holds.** Every object in ``train``'s ``state``: modules, optimisers,
schedulers, tensors, and the ``torch.Generator`` objects that draw the episodes (the random
state: all randomness of a training step must come from generators listed there), plus the
history. Resuming therefore gives the same weights as a run that was never interrupted
(``tests/test_checkpoints.py`` checks this for every training function).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from metaedu.data.base import ClassImageSet
from metaedu.runtime import cache_dir

#: Changes when the layout of checkpoint files changes, so old files are not read.
FORMAT = 1


def fingerprint(*inputs) -> str:
    """A hex digest of ``inputs``: settings dataclasses (every field but ``checkpoint``),
    image sets, tensors, arrays, modules (their weights), generators (their state), and
    numbers, strings, ``None``, lists, tuples and dicts of these."""
    digest = hashlib.sha1()
    for item in inputs:
        _feed(digest, item)
    return digest.hexdigest()


def _feed(digest, obj) -> None:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        digest.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, torch.Generator):
        _feed(digest, obj.get_state())
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        digest.update(f"tensor:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.flatten().view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        _feed(digest, torch.from_numpy(np.ascontiguousarray(obj)))
    elif isinstance(obj, ClassImageSet):
        _feed(digest, ["images", obj.images, obj.targets, list(obj.class_names), list(obj.groups)])
    elif isinstance(obj, torch.nn.Module):
        _feed(digest, dict(obj.state_dict()))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # "checkpoint" and fields marked metadata={"fingerprint": False} (how to compute, not what) are left out
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
                  if f.name != "checkpoint" and f.metadata.get("fingerprint", True)}
        _feed(digest, [type(obj).__qualname__, fields])
    elif isinstance(obj, dict):
        digest.update(f"dict:{len(obj)};".encode())
        for key in sorted(obj, key=str):
            _feed(digest, str(key))
            _feed(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{type(obj).__name__}:{len(obj)};".encode())
        for item in obj:
            _feed(digest, item)
    else:
        raise TypeError(f"cannot fingerprint a {type(obj).__name__}; pass its data, weights or generators instead")


def checkpoint_path(name: str, settings, *inputs) -> Path:
    """The checkpoint file of run ``name`` with these settings and inputs (see the module docstring)."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a checkpoint name must be letters, digits, '-' or '_', got {name!r}")
    if not dataclasses.is_dataclass(settings) or isinstance(settings, type):
        raise TypeError(f"settings must be a settings dataclass instance, got {type(settings).__name__}")
    digest = fingerprint(FORMAT, name, settings, *inputs)[:16]
    return cache_dir() / "checkpoints" / f"{name}-{digest}.pt"


def resolve(checkpoint, name: str, settings, *inputs) -> Path | None:
    """The file a training function passes to ``train``: ``checkpoint`` as the caller gave it,
    or, for ``None``, what ``settings.checkpoint`` asks for (see the module docstring)."""
    if checkpoint is None:
        checkpoint = bool(getattr(settings, "checkpoint", False))
    if checkpoint is False:
        return None
    if checkpoint is not True:
        return Path(checkpoint)
    path = checkpoint_path(name, settings, *inputs)
    record = path.with_suffix(".json")
    if not record.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        described = {
            "name": name,
            "settings_class": type(settings).__qualname__,
            "settings": {f.name: repr(getattr(settings, f.name)) for f in dataclasses.fields(settings)},
            "inputs": [_describe(x) for x in inputs],
            "format": FORMAT,
        }
        record.write_text(json.dumps(described, indent=2))
    return path


def _describe(obj) -> str:
    if isinstance(obj, ClassImageSet):
        return repr(obj)
    if isinstance(obj, torch.Tensor):
        return f"tensor {tuple(obj.shape)} {obj.dtype}"
    if isinstance(obj, torch.nn.Module):
        return f"{type(obj).__name__} with {sum(p.numel() for p in obj.parameters())} parameters"
    if isinstance(obj, torch.Generator):
        return f"generator (state digest {fingerprint(obj)[:8]})"
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return repr(obj)
    return f"{type(obj).__name__} (digest {fingerprint(obj)[:8]})"
