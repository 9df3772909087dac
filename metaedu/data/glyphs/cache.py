"""Building the glyph alphabets once and loading them from the cache afterwards."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from metaedu.data.glyphs import dataset
from metaedu.data.glyphs.dataset import GlyphAlphabets
from metaedu.data.glyphs.fonts import GlyphType
from metaedu.runtime import cache_dir

#: Version of the generated data: part of the cache key, bumped whenever the images would change
#: (3: Omniglot's 5 px pen and character size, structural noise, style variants and blots left out,
#: invented alphabets).
DATA_VERSION = 3


def cache_paths(seed: int, size: int, root: Path | None = None) -> tuple[Path, Path]:
    """Where the images (``.npz``) and the metadata (``.json``) of one build are kept."""
    folder = (Path(root) if root is not None else cache_dir()) / "glyphs"
    stem = f"glyphs-v{DATA_VERSION}-seed{seed}-{size}px"
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def load_glyphs(seed: int = 0, size: int = 28, cache: bool = True, root: Path | None = None) -> GlyphAlphabets:
    """The glyph alphabets at ``size`` x ``size`` (28 by default, 105 like Omniglot's originals).

    Built on first use (about half a minute on a laptop) and cached under ``root`` (default:
    :func:`metaedu.runtime.cache_dir`); later calls load from the cache. Deterministic for a seed.
    """
    if not cache:
        return dataset.build_glyphs(seed, size)
    array_path, meta_path = cache_paths(seed, size, root)
    if array_path.exists() and meta_path.exists():
        start = time.perf_counter()
        try:
            with np.load(array_path) as f:
                images = f["images"]
            meta = json.loads(meta_path.read_text())
            data = _from_meta(images, meta, seed, size)
        except Exception as err:  # a damaged cache is rebuilt, not trusted
            array_path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            print(f"glyph cache {array_path} was unreadable ({err.__class__.__name__}); rebuilding")
        else:
            data.load_seconds = time.perf_counter() - start
            return data
    data = dataset.build_glyphs(seed, size)
    _save(data, array_path, meta_path)
    return data


def _from_meta(images: np.ndarray, meta: dict, seed: int, size: int) -> GlyphAlphabets:
    types = [GlyphType(font=t["font"], code=t["code"], script=t["script"], alphabet=t.get("alphabet"),
                       strokes=[np.asarray(s, dtype=np.float64) for s in t["strokes"]]) for t in meta["types"]]
    if images.shape[:2] != (len(types), dataset.N_DRAWERS) or images.shape[2:] != (size, size):
        raise ValueError(f"cached images of shape {images.shape} do not match {len(types)} characters at {size} px")
    return GlyphAlphabets(images=images, types=types, alphabets=meta["alphabets"], sides=meta["sides"], seed=seed,
                          size=size, build_seconds=meta["build_seconds"], selection=meta.get("selection", {}))


def _save(data: GlyphAlphabets, array_path: Path, meta_path: Path) -> None:
    array_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = array_path.with_name(f"{array_path.stem}.{os.getpid()}.tmp.npz")  # concurrent builders never collide
    np.savez(tmp, images=data.images)
    tmp.replace(array_path)
    meta = {
        "types": [{"font": t.font, "code": t.code, "script": t.script, "alphabet": t.alphabet,
                   "strokes": [s.tolist() for s in t.strokes]} for t in data.types],
        "alphabets": data.alphabets,
        "sides": data.sides,
        "build_seconds": data.build_seconds,
        "selection": data.selection,
        "data_version": DATA_VERSION,
    }
    meta_tmp = meta_path.with_name(f"{meta_path.stem}.{os.getpid()}.tmp")
    meta_tmp.write_text(json.dumps(meta))
    meta_tmp.replace(meta_path)
