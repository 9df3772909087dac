"""Real Omniglot (Lake, Salakhutdinov & Tenenbaum 2015), for users who have the files.

Reads the released layout, either unpacked folders or the zip archives::

    images_background/<Alphabet>/character01/0643_01.png   (105 x 105, mode "1", strokes black)
    images_evaluation/...

and Lake et al.'s twenty 20-way one-shot runs (``all_runs.zip`` or its folders)
with their scorer. Nothing here is needed for the course's default data (the
glyph alphabets); the tests exercise it on fixtures they generate in the same
layout. :func:`download` fetches the archives for users with a network.
"""

from __future__ import annotations

import io
import re
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from metaedu.data.base import ClassImageSet

#: Where the authors publish the archives (used only by :func:`download`).
RELEASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}.zip"
SPLITS = {"background": "images_background", "evaluation": "images_evaluation"}
DRAWER_FILE = re.compile(r"^(\d+)_(\d+)\.png$")


class OmniglotError(ValueError):
    """The Omniglot files are missing, laid out differently, or damaged (the message names the path)."""


class _Source:
    """Files under a folder or inside a zip archive, addressed by relative POSIX paths."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = None
        if path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile as err:
                raise OmniglotError(f"{path} is not a readable zip archive ({err})") from None
            self.names = [n for n in self.zip.namelist() if not n.endswith("/")]
        elif path.is_dir():
            self.names = [p.relative_to(path).as_posix() for p in sorted(path.rglob("*")) if p.is_file()]
        else:
            raise OmniglotError(f"{path} does not exist (expected a folder or a .zip archive)")

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(name)
        return (self.path / name).read_bytes()

    def where(self, name: str) -> str:
        return f"{self.path}!{name}" if self.zip is not None else str(self.path / name)


def _open_png(source: _Source, name: str, size: int) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(source.read(name)))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise OmniglotError(f"corrupt or unreadable image {source.where(name)} ({err.__class__.__name__})") from None
    ink = 1.0 - np.asarray(img.convert("L"), dtype=np.float32) / 255.0  # strokes bright
    if ink.shape != (size, size):
        ink = np.asarray(Image.fromarray(ink).resize((size, size), Image.BILINEAR))
    return ink


def _locate(root: Path, split: str) -> Path:
    folder = SPLITS.get(split)
    if folder is None:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    for candidate in (root / folder, root / f"{folder}.zip", root):
        if candidate.exists() and (candidate.is_file() or candidate.name == folder):
            return candidate
    raise OmniglotError(f"no {folder}/ folder or {folder}.zip under {root}")


def load_omniglot(root: str | Path, split: str = "background", size: int = 28) -> ClassImageSet:
    """One split of real Omniglot as a class-indexed image set (alphabets as groups)."""
    source = _Source(_locate(Path(root).expanduser(), split))
    chars: dict[tuple[str, str], list[str]] = {}
    for name in source.names:
        parts = PurePosixPath(name).parts
        if parts and parts[0] == SPLITS[split]:
            parts = parts[1:]
        if len(parts) != 3 or not parts[2].endswith(".png"):
            continue
        if not DRAWER_FILE.match(parts[2]):
            raise OmniglotError(f"unexpected file name {source.where(name)}: expected <id>_<drawer>.png")
        chars.setdefault((parts[0], parts[1]), []).append(name)
    if not chars:
        raise OmniglotError(
            f"{source.path} holds no images in the layout <alphabet>/<characterNN>/<id>_<drawer>.png"
        )
    images, targets, class_names, groups = [], [], [], []
    for c, ((alphabet, character), names) in enumerate(sorted(chars.items())):
        class_names.append(f"{alphabet}/{character}")
        groups.append(alphabet)
        for name in sorted(names):
            images.append(_open_png(source, name, size))
            targets.append(c)
    return ClassImageSet(
        images=torch.from_numpy(np.stack(images))[:, None],
        targets=torch.tensor(targets),
        class_names=class_names,
        groups=groups,
        name=f"omniglot/{split}",
    )


@dataclass
class OneShotRun:
    """One of Lake's 20-way one-shot runs: 20 training images, 20 test images, the answer key."""

    name: str
    training: torch.Tensor  # [20, 1, size, size]
    test: torch.Tensor  # [20, 1, size, size]
    answer: torch.Tensor  # [20] index of the training image each test image matches


def load_lake_runs(root: str | Path, size: int = 28) -> list[OneShotRun]:
    """Lake et al.'s twenty one-shot runs from ``all_runs/`` or ``all_runs.zip``."""
    root = Path(root).expanduser()
    path = next((p for p in (root / "all_runs", root / "all_runs.zip", root) if p.exists()), None)
    if path is None:
        raise OmniglotError(f"no all_runs/ folder or all_runs.zip under {root}")
    source = _Source(path)
    label_files = sorted(n for n in source.names if n.endswith("class_labels.txt"))
    if not label_files:
        raise OmniglotError(f"{path} holds no runNN/class_labels.txt files")
    runs = []
    for label_file in label_files:
        prefix = label_file[: -len("class_labels.txt")]
        pairs = []
        for line_no, line in enumerate(source.read(label_file).decode().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise OmniglotError(f"{source.where(label_file)} line {line_no}: expected 'test.png training.png'")
            pairs.append(fields)
        run_dir = PurePosixPath(label_file).parent.name
        training_names = sorted(n for n in source.names if n.startswith(prefix + "training/") and n.endswith(".png"))
        test_names = [prefix + _strip_run(t, run_dir) for t, _ in pairs]
        key_names = [prefix + _strip_run(c, run_dir) for _, c in pairs]
        for n in test_names + key_names:
            if n not in source.names:
                raise OmniglotError(f"{source.where(label_file)} names {n}, which is missing")
        runs.append(
            OneShotRun(
                name=run_dir,
                training=torch.from_numpy(np.stack([_open_png(source, n, size) for n in training_names]))[:, None],
                test=torch.from_numpy(np.stack([_open_png(source, n, size) for n in test_names]))[:, None],
                answer=torch.tensor([training_names.index(n) for n in key_names]),
            )
        )
    return runs


def _strip_run(path: str, run_dir: str) -> str:
    """``run01/test/item01.png`` -> ``test/item01.png``."""
    parts = PurePosixPath(path).parts
    return "/".join(parts[1:]) if parts and parts[0] == run_dir else path


def score_lake_runs(runs: list[OneShotRun], predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    """Accuracy (%) over all runs: ``predict(training [20,1,H,W], test [20,1,H,W])`` returns the
    index of the matching training image for each test image."""
    correct = total = 0
    for run in runs:
        guess = torch.as_tensor(predict(run.training, run.test)).cpu()
        correct += int((guess == run.answer).sum())
        total += len(run.answer)
    return 100.0 * correct / total


def download(root: str | Path, names=("images_background", "images_evaluation", "all_runs")) -> list[Path]:
    """Fetch the archives into ``root`` (needs a network; never called by the tests)."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        target = root / f"{name}.zip"
        if not target.exists():
            urllib.request.urlretrieve(RELEASE_URL.format(name=name), target)
        out.append(target)
    return out
