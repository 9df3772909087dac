"""Real Omniglot (Lake, Salakhutdinov & Tenenbaum 2015), for users who have the files.

Reads the files as the authors distribute them, unpacked or as zip archives
(a zip may hold a top-level folder of any name)::

    images_background/<Alphabet>/character01/0643_01.png   (105 x 105, mode "1", strokes black)
    images_evaluation/...
    images_background_small1/..., images_background_small2/...   (5 background alphabets each)

and Lake et al.'s twenty 20-way one-shot runs (``all_runs.zip``, an ``all_runs/``
folder, loose ``runNN/`` folders, or one run folder) with their scorer. A folder
of another name is read when it is given explicitly. :func:`find_omniglot` says
which of these a folder holds. Nothing here is needed for the course's default
data (the glyph alphabets); the tests exercise it on fixtures they generate in
every layout. :func:`download` fetches the archives for users with a network.
"""

from __future__ import annotations

import io
import re
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from metaedu.data.base import ClassImageSet

#: Where the authors publish the archives (used only by :func:`download`).
RELEASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}.zip"
#: The released folder (or archive) names of each split, in order of preference.
SPLITS = {
    "background": ("images_background",),
    "background_small1": ("images_background_small1",),
    "background_small2": ("images_background_small2",),
    "evaluation": ("images_evaluation",),
}
#: Used for ``split="background"`` when the full background set is absent: the small subsets, together.
SMALL_BACKGROUND = ("images_background_small1", "images_background_small2")
RUNS_NAME = "all_runs"
DRAWER_FILE = re.compile(r"^(\d+)_(\d+)\.png$")
RUN_FOLDER = re.compile(r"^run\d+$")


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
            self.names = [n for n in self.zip.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]
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


def _named(root: Path, name: str) -> Path | None:
    """``root/name`` as a folder or ``root/name.zip``, whichever exists (the folder first)."""
    for candidate in (root / name, root / f"{name}.zip"):
        if candidate.exists():
            return candidate
    return None


# ----------------------------------------------------------------------------- what is there


@dataclass
class OmniglotFiles:
    """What a folder holds: the Omniglot splits and Lake's runs found in it (None: not found)."""

    root: Path
    background: list[Path] = field(default_factory=list)  # images_background, or the small subsets
    evaluation: Path | None = None
    runs: Path | None = None  # all_runs/, all_runs.zip, or the folder holding runNN/ folders

    def describe(self) -> str:
        """One line per kind of file: what was found and where, or that it was not found."""
        def show(p):
            return ", ".join(str(x) for x in p) if isinstance(p, list) else str(p)

        lines = [f"Omniglot files under {self.root}:"]
        for label, value, wanted in (
            ("background (meta-training) images", self.background, "images_background[.zip] or images_background_small1/2[.zip]"),
            ("evaluation (meta-test) images", self.evaluation, "images_evaluation[.zip]"),
            ("Lake's one-shot runs", self.runs, "all_runs[.zip] or run01/ ... run20/"),
        ):
            lines.append(f"  {label}: " + (f"found {show(value)}" if value else f"not found (looked for {wanted})"))
        return "\n".join(lines)


def find_omniglot(root: str | Path) -> OmniglotFiles:
    """Look for the released Omniglot files directly under ``root`` (nothing is read yet)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise OmniglotError(f"{root} is not a folder (expected the folder that holds the Omniglot files)")
    full = _named(root, SPLITS["background"][0])
    small = [p for p in (_named(root, n) for n in SMALL_BACKGROUND) if p is not None]
    runs = _named(root, RUNS_NAME)
    if runs is None and any(RUN_FOLDER.match(p.name) and p.is_dir() for p in root.iterdir()):
        runs = root
    return OmniglotFiles(root=root, background=[full] if full else small,
                         evaluation=_named(root, SPLITS["evaluation"][0]), runs=runs)


# ----------------------------------------------------------------------------- images


def _split_sources(root: Path, split: str) -> list[Path]:
    """The folders or archives that make up ``split`` for a ``root`` given by the user."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if root.is_file():
        return [root]  # an archive given explicitly, whatever its name
    if not root.is_dir():
        raise OmniglotError(f"{root} does not exist (expected a folder or a .zip archive)")
    found = _named(root, SPLITS[split][0])
    if found is not None:
        return [found]
    if split == "background":
        small = [p for p in (_named(root, n) for n in SMALL_BACKGROUND) if p is not None]
        if small:
            return small
    known = {n for names in SPLITS.values() for n in names}
    if root.name in known or any(_named(root, n) for n in known):
        others = sorted(n for n in known if _named(root, n))
        raise OmniglotError(f"no {SPLITS[split][0]}/ folder or {SPLITS[split][0]}.zip under {root}"
                            + (f" (it holds {', '.join(others)})" if others else ""))
    return [root]  # a folder of another name given explicitly: it is the split itself


def _characters(source: _Source) -> dict[tuple[str, str], list[str]]:
    """PNG names by (alphabet, character): the last three path parts, under at most one common top folder."""
    pngs = [n for n in source.names if n.lower().endswith(".png")]
    tops = {PurePosixPath(n).parts[:-3] for n in pngs}
    if len(tops) > 1:
        shown = ", ".join("/".join(t) or "(top level)" for t in sorted(tops))
        raise OmniglotError(f"{source.path} mixes images under several folders ({shown}); give one of them")
    chars: dict[tuple[str, str], list[str]] = {}
    for name in pngs:
        parts = PurePosixPath(name).parts
        if len(parts) < 3:
            raise OmniglotError(f"unexpected image {source.where(name)}: expected <alphabet>/<character>/<id>_<drawer>.png")
        if not DRAWER_FILE.match(parts[-1]):
            raise OmniglotError(f"unexpected file name {source.where(name)}: expected <id>_<drawer>.png")
        chars.setdefault((parts[-3], parts[-2]), []).append(name)
    return chars


def load_omniglot(root: str | Path, split: str = "background", size: int = 28) -> ClassImageSet:
    """One split of real Omniglot as a class-indexed image set (alphabets as groups).

    ``root`` is a folder that holds the released folders or archives (``split``
    picks one; ``"background"`` falls back to the two small background subsets, read
    together, when the full set is absent), or a split's own folder or archive of
    any name.
    """
    paths = _split_sources(Path(root).expanduser(), split)
    images, targets, class_names, groups = [], [], [], []
    for path in paths:
        source = _Source(path)
        chars = _characters(source)
        if not chars:
            raise OmniglotError(f"{path} holds no images in the layout <alphabet>/<characterNN>/<id>_<drawer>.png")
        for (alphabet, character), names in sorted(chars.items()):
            c = len(class_names)
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


# ----------------------------------------------------------------------------- Lake's runs


@dataclass
class OneShotRun:
    """One of Lake's 20-way one-shot runs: 20 training images, 20 test images, the answer key."""

    name: str
    training: torch.Tensor  # [20, 1, size, size]
    test: torch.Tensor  # [20, 1, size, size]
    answer: torch.Tensor  # [20] index of the training image each test image matches


def load_lake_runs(root: str | Path, size: int = 28) -> list[OneShotRun]:
    """Lake et al.'s one-shot runs, from a folder holding ``all_runs/`` or ``all_runs.zip``, from
    those themselves (with or without a top-level folder), from loose ``runNN/`` folders, or
    from a single run folder."""
    root = Path(root).expanduser()
    path = _named(root, RUNS_NAME) if root.is_dir() else None
    source = _Source(path or root)
    label_files = sorted(n for n in source.names if PurePosixPath(n).name == "class_labels.txt")
    if not label_files:
        raise OmniglotError(f"{source.path} holds no runNN/class_labels.txt files")
    runs = []
    for label_file in label_files:
        folder = PurePosixPath(label_file).parent  # the run's folder inside the source ('.' for a run given directly)
        name = folder.name or source.path.stem
        prefix = "" if str(folder) == "." else f"{folder}/"
        pairs = []
        for line_no, line in enumerate(source.read(label_file).decode().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise OmniglotError(f"{source.where(label_file)} line {line_no}: expected 'test.png training.png'")
            # the key names files as runNN/test/itemMM.png; inside the run folder that is test/itemMM.png
            pairs.append(tuple(prefix + "/".join(PurePosixPath(f).parts[-2:]) for f in fields))
        training_names = sorted(n for n in source.names if n.startswith(prefix + "training/") and n.endswith(".png"))
        names = set(source.names)
        for test_name, key_name in pairs:
            for n in (test_name, key_name):
                if n not in names:
                    raise OmniglotError(f"{source.where(label_file)} names {n}, which is missing from {source.path}")
        runs.append(
            OneShotRun(
                name=name,
                training=torch.from_numpy(np.stack([_open_png(source, n, size) for n in training_names]))[:, None],
                test=torch.from_numpy(np.stack([_open_png(source, t, size) for t, _ in pairs]))[:, None],
                answer=torch.tensor([training_names.index(k) for _, k in pairs]),
            )
        )
    return runs


def lake_run_hits(runs: list[OneShotRun], predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """1.0 for each test image of each run that ``predict(training [20,1,H,W], test [20,1,H,W])`` matches to
    its training image, else 0.0: ``[n_runs * 20]`` (two predictors' hits pair up query by query)."""
    if not runs:
        raise ValueError("no runs to score")
    hits = []
    for run in runs:
        guess = torch.as_tensor(predict(run.training, run.test)).cpu()
        if guess.shape != run.answer.shape:
            raise ValueError(f"predict must return {tuple(run.answer.shape)} indices for {run.name}, got {tuple(guess.shape)}")
        hits.append((guess == run.answer).float())
    return torch.cat(hits)


def score_lake_runs(runs: list[OneShotRun], predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    """Accuracy (%) over all runs' test images (see :func:`lake_run_hits`)."""
    return 100.0 * float(lake_run_hits(runs, predict).mean())


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
