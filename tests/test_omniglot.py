"""Real-Omniglot readers, on fixtures generated here in every layout the files are distributed in."""

import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image

from metaedu.data.omniglot import (
    OmniglotError,
    find_omniglot,
    lake_run_hits,
    load_lake_runs,
    load_omniglot,
    score_lake_runs,
)


def write_png(path, seed):
    rng = np.random.default_rng(seed)
    img = np.ones((105, 105), dtype=bool)  # background white (True), strokes black (False)
    r, c = rng.integers(10, 80, size=2)
    img[r : r + 15, c : c + 4] = False
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).convert("1").save(path)


def make_split(root, folder="images_background", alphabets=("Korean", "Tifinagh_(Berber)"), chars=3, drawers=20, first_id=1):
    cid = first_id
    for a in alphabets:
        for ch in range(1, chars + 1):
            for d in range(1, drawers + 1):
                write_png(root / folder / a / f"character{ch:02d}" / f"{cid:04d}_{d:02d}.png", cid * 100 + d)
            cid += 1
    return root / folder


def zip_folder(folder, target, top_level=True):
    """Zip a folder, with the folder itself as the archive's top level (as released) or without it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, p.relative_to(folder.parent if top_level else folder).as_posix())
    return target


def test_reads_folders_and_zip(tmp_path):
    folder = make_split(tmp_path / "a")
    data = load_omniglot(tmp_path / "a", "background")
    assert data.n_classes == 6 and data.images.shape == (120, 1, 28, 28)
    assert data.group_names() == ["Korean", "Tifinagh_(Berber)"]
    assert (data.counts() == 20).all()
    # strokes become bright ink
    assert data.images.max() > 0.5 and data.images.mean() < 0.2
    full = load_omniglot(tmp_path / "a", "background", size=105)
    for top_level in (True, False):
        archive = zip_folder(folder, tmp_path / f"z{top_level}" / "images_background.zip", top_level)
        for given in (archive, archive.parent):  # the archive itself, or the folder that holds it
            from_zip = load_omniglot(given, "background", size=105)
            assert from_zip.images.shape == (120, 1, 105, 105)
            torch.testing.assert_close(from_zip.images, full.images)


def test_small_background_sets_folders_and_zips(tmp_path):
    make_split(tmp_path / "f", "images_background_small1", ("Korean",), chars=2)
    small2 = make_split(tmp_path / "f", "images_background_small2", ("Bengali", "Greek"), chars=2, first_id=50)
    one = load_omniglot(tmp_path / "f", "background_small1")
    assert one.group_names() == ["Korean"] and one.n_classes == 2
    # "background" without the full set reads both small sets together
    both = load_omniglot(tmp_path / "f", "background")
    assert both.group_names() == ["Korean", "Bengali", "Greek"] and both.n_classes == 6
    # the same from zips, one with its top-level folder and one without
    zdir = tmp_path / "z"
    zip_folder(tmp_path / "f" / "images_background_small1", zdir / "images_background_small1.zip", top_level=True)
    zip_folder(small2, zdir / "images_background_small2.zip", top_level=False)
    from_zips = load_omniglot(zdir, "background")
    assert from_zips.class_names == both.class_names
    torch.testing.assert_close(from_zips.images, both.images)
    found = find_omniglot(zdir)
    assert [p.name for p in found.background] == ["images_background_small1.zip", "images_background_small2.zip"]
    assert found.evaluation is None and "evaluation (meta-test) images: not found" in found.describe()


def test_a_folder_of_another_name_given_explicitly(tmp_path):
    make_split(tmp_path, "my_omniglot_copy", ("Korean",), chars=2)
    data = load_omniglot(tmp_path / "my_omniglot_copy", "evaluation")
    assert data.n_classes == 2 and data.name == "omniglot/evaluation"
    # a folder that holds released folders is not mistaken for a split
    make_split(tmp_path / "r", "images_background", ("Korean",), chars=1)
    with pytest.raises(OmniglotError, match="no images_evaluation/ folder .*it holds images_background"):
        load_omniglot(tmp_path / "r", "evaluation")


def test_missing_wrong_and_corrupt(tmp_path):
    with pytest.raises(OmniglotError, match="does not exist"):
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
    odd = tmp_path / "odd" / "Korean" / "character01" / "scan.png"
    odd.parent.mkdir(parents=True)
    write_png(odd, 0)
    with pytest.raises(OmniglotError, match="scan.png: expected <id>_<drawer>.png"):
        load_omniglot(tmp_path / "odd")
    with pytest.raises(OmniglotError, match="is not a folder"):
        find_omniglot(tmp_path / "broken.zip")


def make_runs(root, n_runs=2):
    """Runs in the released layout, under ``root``/run01, run02, ...; returns each run's answer key."""
    rng = np.random.default_rng(0)
    answers = []
    for r in range(1, n_runs + 1):
        run = root / f"run{r:02d}"
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


def nearest(training, test):
    return torch.cdist(test.flatten(1), training.flatten(1)).argmin(1)


def test_lake_runs_and_scorer(tmp_path):
    answers = make_runs(tmp_path / "all_runs")
    runs = load_lake_runs(tmp_path)
    assert [r.name for r in runs] == ["run01", "run02"] and runs[0].training.shape == (20, 1, 28, 28)
    assert torch.equal(runs[0].answer, torch.as_tensor(answers[0]))
    assert score_lake_runs(runs, nearest) == 100.0
    assert score_lake_runs(runs, lambda tr, te: torch.zeros(20, dtype=torch.long)) == pytest.approx(5.0)
    hits = lake_run_hits(runs, lambda tr, te: torch.zeros(20, dtype=torch.long))
    assert hits.shape == (40,) and hits.sum() == 2  # query by query: the one test image of class 1 in each run
    with pytest.raises(ValueError, match="no runs"):
        score_lake_runs([], nearest)
    with pytest.raises(ValueError, match="must return"):
        lake_run_hits(runs, lambda tr, te: torch.zeros(3, dtype=torch.long))


def test_lake_runs_in_every_layout(tmp_path):
    answers = [torch.as_tensor(a) for a in make_runs(tmp_path / "all_runs")]
    both = ["run01", "run02"]
    layouts = [  # (what the user points at, the runs it holds)
        (tmp_path / "all_runs", both),  # loose runNN/ folders
        (tmp_path / "all_runs" / "run02", ["run02"]),  # one run folder
        (zip_folder(tmp_path / "all_runs", tmp_path / "a" / "all_runs.zip"), both),  # with its top-level folder
        (zip_folder(tmp_path / "all_runs", tmp_path / "b" / "all_runs.zip", top_level=False), both),
        (tmp_path / "a", both),  # the folder that holds all_runs.zip
        (tmp_path, both),  # the folder that holds all_runs/
    ]
    for path, names in layouts:
        runs = load_lake_runs(path)
        assert [r.name for r in runs] == names, path
        for run in runs:
            assert torch.equal(run.answer, answers[int(run.name[3:]) - 1]), path
        assert score_lake_runs(runs, nearest) == 100.0, path
    found = find_omniglot(tmp_path / "all_runs")
    assert found.runs == tmp_path / "all_runs" and found.background == []
    assert find_omniglot(tmp_path / "a").runs == tmp_path / "a" / "all_runs.zip"
    assert "Lake's one-shot runs: found" in find_omniglot(tmp_path).describe()


def test_lake_runs_missing_file(tmp_path):
    make_runs(tmp_path / "all_runs", n_runs=1)
    (tmp_path / "all_runs" / "run01" / "test" / "item05.png").unlink()
    with pytest.raises(OmniglotError, match="item05.png, which is missing"):
        load_lake_runs(tmp_path)
    with pytest.raises(OmniglotError, match="holds no runNN/class_labels.txt"):
        load_lake_runs(tmp_path / "all_runs" / "run01" / "training")


# --- lecture 00's transfer check (glyph-trained vs Omniglot-trained ProtoNet on Lake's runs), on fixtures

LECTURE_00 = Path(__file__).resolve().parents[1] / "lectures" / "00_one_shot.ipynb"


def transfer_cell_source():
    nb = nbformat.read(LECTURE_00, as_version=4)
    cells = [c for c in nb.cells if "omniglot-transfer" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "lecture 00 should have one cell tagged omniglot-transfer"
    assert not cells[0].get("outputs"), "notebooks are stored without outputs"
    return cells[0].source


@pytest.mark.parametrize("layout", ["runs and background", "runs only", "no runs", "no path"])
def test_lecture_00_transfer_check_on_a_fixture(tmp_path, glyphs, monkeypatch, capsys, layout):
    from metaedu.algorithms import protonet
    from metaedu.runtime import preset

    tiny = protonet.ProtoNetSettings(hidden=8, train_way=5, train_query=2, steps=3, lr_halve_every=10, rotations=(0,))
    monkeypatch.setattr(protonet.ProtoNetSettings, "quick", classmethod(lambda cls: tiny))  # the notebook's budget, shrunk
    if layout in ("runs and background", "runs only"):
        make_runs(tmp_path / "all_runs")
    if layout in ("runs and background", "no runs"):
        make_split(tmp_path, chars=3)
    namespace = {"OMNIGLOT_PATH": "" if layout == "no path" else str(tmp_path), "MODE": "quick", "SEED": 0,
                 "device": torch.device("cpu"), "data": glyphs, "torch": torch, "preset": preset}
    exec(transfer_cell_source(), namespace)
    out = capsys.readouterr().out
    if layout in ("no runs", "no path"):
        assert "no Lake runs found" in out and "trained on" not in out
        return
    assert "budget: 3 steps of 5-way 1-shot episodes, Conv4 with 8 filters" in out
    assert "trained on glyph background alphabets" in out and "% on Lake's 2 runs" in out
    # the fixture's test images are their training images, so any embedding matches them all
    assert namespace["lake_hits"]["glyph background alphabets"].mean() == 100.0
    if layout == "runs only":
        assert "no Omniglot background images found" in out and "cannot be told apart" not in out
    else:
        assert "trained on Omniglot background (6 classes" in out
        assert ("one-shot accuracy on Lake's 2 runs (%): the Omniglot-trained ProtoNet cannot be told apart from "
                "the glyph-trained ProtoNet") in out
