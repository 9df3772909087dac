"""Real-Omniglot readers, on fixtures generated here in the released layout."""

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from metaedu.data.omniglot import OmniglotError, load_lake_runs, load_omniglot, score_lake_runs


def write_png(path, seed):
    rng = np.random.default_rng(seed)
    img = np.ones((105, 105), dtype=bool)  # background white (True), strokes black (False)
    r, c = rng.integers(10, 80, size=2)
    img[r : r + 15, c : c + 4] = False
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).convert("1").save(path)


def make_split(root, folder="images_background", alphabets=("Korean", "Tifinagh_(Berber)"), chars=3, drawers=20):
    cid = 1
    for a in alphabets:
        for ch in range(1, chars + 1):
            for d in range(1, drawers + 1):
                write_png(root / folder / a / f"character{ch:02d}" / f"{cid:04d}_{d:02d}.png", cid * 100 + d)
            cid += 1
    return root / folder


def zip_folder(folder, target):
    with zipfile.ZipFile(target, "w") as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, p.relative_to(folder.parent).as_posix())
    return target


def test_reads_folders_and_zip(tmp_path):
    folder = make_split(tmp_path / "a")
    data = load_omniglot(tmp_path / "a", "background")
    assert data.n_classes == 6 and data.images.shape == (120, 1, 28, 28)
    assert data.group_names() == ["Korean", "Tifinagh_(Berber)"]
    assert (data.counts() == 20).all()
    # strokes become bright ink
    assert data.images.max() > 0.5 and data.images.mean() < 0.2
    zip_folder(folder, tmp_path / "images_background.zip")
    from_zip = load_omniglot(tmp_path / "images_background.zip", "background", size=105)
    assert from_zip.images.shape == (120, 1, 105, 105)
    full = load_omniglot(tmp_path / "a", "background", size=105)
    torch.testing.assert_close(from_zip.images, full.images)


def test_missing_wrong_and_corrupt(tmp_path):
    with pytest.raises(OmniglotError, match="does not exist|no images_background"):
        load_omniglot(tmp_path / "nowhere")
    (tmp_path / "images_background" / "Korean").mkdir(parents=True)
    with pytest.raises(OmniglotError, match="holds no images"):
        load_omniglot(tmp_path)
    bad = tmp_path / "images_background" / "Korean" / "character01" / "0001_01.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(OmniglotError, match="0001_01.png"):
        load_omniglot(tmp_path)
    (tmp_path / "broken.zip").write_bytes(b"nope")
    with pytest.raises(OmniglotError, match="broken.zip"):
        load_omniglot(tmp_path / "broken.zip")
    with pytest.raises(ValueError, match="split must be"):
        load_omniglot(tmp_path, "test")


def make_runs(root, n_runs=2):
    rng = np.random.default_rng(0)
    answers = []
    for r in range(1, n_runs + 1):
        run = root / "all_runs" / f"run{r:02d}"
        perm = rng.permutation(20)
        lines = []
        for i in range(20):
            write_png(run / "training" / f"class{i + 1:02d}.png", 1000 * r + i)
        for j in range(20):
            k = int(perm[j])
            write_png(run / "test" / f"item{j + 1:02d}.png", 1000 * r + k)  # the same drawing as its class
            lines.append(f"run{r:02d}/test/item{j + 1:02d}.png run{r:02d}/training/class{k + 1:02d}.png")
        (run / "class_labels.txt").write_text("\n".join(lines) + "\n")
        answers.append(perm)
    return answers


def test_lake_runs_and_scorer(tmp_path):
    answers = make_runs(tmp_path)
    runs = load_lake_runs(tmp_path)
    assert len(runs) == 2 and runs[0].training.shape == (20, 1, 28, 28)
    assert torch.equal(runs[0].answer, torch.as_tensor(answers[0]))

    def nearest(training, test):
        d = torch.cdist(test.flatten(1), training.flatten(1))
        return d.argmin(1)

    assert score_lake_runs(runs, nearest) == 100.0
    assert score_lake_runs(runs, lambda tr, te: torch.zeros(20, dtype=torch.long)) == pytest.approx(5.0)
    (tmp_path / "z").mkdir()
    zip_folder(tmp_path / "all_runs", tmp_path / "z" / "all_runs.zip")
    assert score_lake_runs(load_lake_runs(tmp_path / "z"), nearest) == 100.0


def test_lake_runs_missing_file(tmp_path):
    make_runs(tmp_path, n_runs=1)
    (tmp_path / "all_runs" / "run01" / "test" / "item05.png").unlink()
    with pytest.raises(OmniglotError, match="item05.png"):
        load_lake_runs(tmp_path)
