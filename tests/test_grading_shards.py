"""Grading in shards (issue 27): ``--shard I/N`` and ``--merge``.

The fast tests fake the grading of one submission (``fake_grading`` of test_grading_runs.py):
shares cover every submission exactly once, a merge does not depend on the order of its folders
and equals the unsharded gradebook, a dead shard's submissions get rows saying so, and folders
that are not shards of one class are refused. The slow test grades real submissions in sandboxes
through the command line, sharded and not, and requires the same gradebook.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

import grading_fixtures as gf
from metaedu.cli import main as cli_main
from metaedu.grading import grader, shards
from test_grading_runs import NAMES, fake_grading  # noqa: F401 - a fixture used below

SEED = 4242


def _rows(out: Path) -> list[list[str]]:
    return list(csv.reader((out / "gradebook.csv").read_text(encoding="utf-8").splitlines()))


def _without_durations(rows: list[list[str]]) -> list[list[str]]:
    column = rows[0].index("duration_s")
    return [row[:column] + row[column + 1 :] for row in rows]


def _submissions(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "subs"
    folder.mkdir()
    for i, name in enumerate(names):
        (folder / name).write_bytes(json.dumps({"n": i}).encode())
    return folder


@pytest.mark.parametrize(
    ("text", "message"), [("0/4", "between 1 and N"), ("5/4", "between 1 and N"), ("a/b", "I/N"), ("3", "I/N")]
)
def test_bad_shards_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        shards.parse(text)


def test_shares_cover_every_submission_exactly_once():
    names = [f"s{i:03d}.ipynb" for i in range(23)] + NAMES
    for count in (1, 2, 3, 7, 40):
        picked = [n for i in range(1, count + 1) for n in shards.pick(names, i, count)]
        assert sorted(picked) == sorted(names), count
        sizes = [len(shards.pick(names, i, count)) for i in range(1, count + 1)]
        assert max(sizes) - min(sizes) <= 1
    assert shards.pick(list(reversed(names)), 2, 3) == shards.pick(names, 2, 3)  # by sorted name
    with pytest.raises(ValueError, match="seed"):
        grader.Settings(shard=(1, 2))


def _grade_shards(submissions: Path, tmp_path: Path, count: int, calls: list) -> list[Path]:
    outs = []
    for index in range(1, count + 1):
        out = tmp_path / f"shard{index}"
        grader.grade_folder(
            submissions, "episodes_protonet", out, grader.Settings(seed=SEED, shard=(index, count), progress=False)
        )
        outs.append(out)
    return outs


def test_merged_shards_equal_the_unsharded_gradebook_in_any_order(tmp_path, fake_grading):  # noqa: F811
    names = NAMES + [f"extra{i}.ipynb" for i in range(4)]
    submissions = _submissions(tmp_path, names)
    grader.grade_folder(
        submissions, "episodes_protonet", tmp_path / "whole", grader.Settings(seed=SEED, progress=False)
    )
    assert sorted(fake_grading) == sorted(names)
    fake_grading.clear()
    outs = _grade_shards(submissions, tmp_path, 3, fake_grading)
    assert sorted(fake_grading) == sorted(names), "every submission is graded by exactly one shard"
    one = shards.merge(outs, tmp_path / "merged1")
    two = shards.merge(list(reversed(outs)), tmp_path / "merged2")
    assert one["missing"] == two["missing"] == [] and one["graded"] == len(names)
    assert _rows(tmp_path / "merged1") == _rows(tmp_path / "merged2")
    assert _without_durations(_rows(tmp_path / "merged1")) == _without_durations(_rows(tmp_path / "whole"))
    merged_results = sorted(p.parent.name for p in (tmp_path / "merged1" / "submissions").glob("*/feedback.md"))
    whole_results = sorted(p.parent.name for p in (tmp_path / "whole" / "submissions").glob("*/feedback.md"))
    assert merged_results == whole_results


def test_a_dead_shard_leaves_its_submissions_reported_missing(tmp_path, fake_grading):  # noqa: F811
    names = [f"s{i}.ipynb" for i in range(7)]
    submissions = _submissions(tmp_path, names)
    outs = _grade_shards(submissions, tmp_path, 3, fake_grading)
    # shard 2 never ran; shard 3 stopped after grading one of its two submissions
    stopped = sorted((outs[2] / "submissions").glob("*/result.json"))[-1]
    stopped.unlink()
    summary = shards.merge([outs[0], outs[2]], tmp_path / "merged")
    lost = sorted(shards.pick(names, 2, 3) + [names[5]])
    assert sorted(name for name, _ in summary["missing"]) == lost and summary["shards_absent"] == [2]
    rows = {row[0]: row for row in _rows(tmp_path / "merged")[1:]}
    assert sorted(rows) == names, "a missing submission still has a row"
    for name in lost:
        assert rows[name][1] == "not_graded" and rows[name][2] == "" and "did not grade it" in rows[name][-1]
    assert "folder was not given" in rows["s1.ipynb"][-1] and "stopped" in rows["s5.ipynb"][-1]
    # the command line says so too, with exit status 1
    code = cli_main(["grade", "--merge", str(outs[0]), str(outs[2]), "--out", str(tmp_path / "merged-cli")])
    assert code == 1 and _rows(tmp_path / "merged-cli") == _rows(tmp_path / "merged")


def test_folders_that_are_not_shards_of_one_class_are_refused(tmp_path, fake_grading):  # noqa: F811
    submissions = _submissions(tmp_path, [f"s{i}.ipynb" for i in range(4)])
    outs = _grade_shards(submissions, tmp_path, 2, fake_grading)
    with pytest.raises(ValueError, match="given twice"):
        shutil.copytree(outs[0], tmp_path / "copy")
        shards.merge([outs[0], tmp_path / "copy", outs[1]], tmp_path / "m1")
    other_seed = tmp_path / "other-seed"
    grader.grade_folder(
        submissions, "episodes_protonet", other_seed, grader.Settings(seed=SEED + 1, shard=(2, 2), progress=False)
    )
    with pytest.raises(ValueError, match="seed"):
        shards.merge([outs[0], other_seed], tmp_path / "m2")
    grader.grade_folder(
        submissions, "episodes_protonet", tmp_path / "plain", grader.Settings(seed=SEED, progress=False)
    )
    with pytest.raises(ValueError, match="not graded as a shard"):
        shards.merge([outs[0], tmp_path / "plain"], tmp_path / "m3")
    (submissions / "late.ipynb").write_bytes(b"{}")
    late = tmp_path / "late"
    grader.grade_folder(
        submissions, "episodes_protonet", late, grader.Settings(seed=SEED, shard=(2, 2), progress=False)
    )
    with pytest.raises(ValueError, match="different folders of submissions"):
        shards.merge([outs[0], late], tmp_path / "m4")
    # a submission graded by two shards (a result copied into another share's folder)
    stolen = next((outs[0] / "submissions").iterdir())
    shutil.copytree(stolen, outs[1] / "submissions" / stolen.name)
    with pytest.raises(ValueError, match="not in its share"):
        shards.merge(outs, tmp_path / "m5")
    with pytest.raises(ValueError, match="not an empty folder"):
        shards.merge([outs[0]], outs[1])
    # a shard folder resumed as another share is refused
    with pytest.raises(ValueError, match="shard"):
        grader.grade_folder(
            submissions, "episodes_protonet", outs[0], grader.Settings(seed=SEED, shard=(2, 2), progress=False)
        )


@pytest.mark.slow
def test_sharded_grading_equals_unsharded_in_sandboxes(tmp_path):
    """Real grading through the command line: two shards merged give the unsharded gradebook."""
    submissions = tmp_path / "subs"
    submissions.mkdir()
    wrong = gf.solve(gf.student())
    distances = "def squared_distances(z_query, protos):\n    return ((z_query[:, :, None] - protos[:, None]) ** 2).sum(-1).sqrt()\n"
    gf.cell(wrong, "answer-distances")["source"] = distances  # not squared
    for name, content in (("correct", gf.solve(gf.student())), ("stub", gf.student()), ("wrong", wrong)):
        (submissions / f"{name}.ipynb").write_text(json.dumps(content))
    common = ["--assignment", gf.NAME, "--seed", str(SEED), "--no-progress", "--cpu-limit", "60"]
    assert cli_main(["grade", str(submissions), "--out", str(tmp_path / "whole"), *common]) == 0
    for index in (1, 2):
        out = str(tmp_path / f"shard{index}")
        assert cli_main(["grade", str(submissions), "--out", out, "--shard", f"{index}/2", *common]) == 0
    merge = ["grade", "--merge", str(tmp_path / "shard2"), str(tmp_path / "shard1"), "--out", str(tmp_path / "merged")]
    assert cli_main(merge) == 0
    whole, merged = _rows(tmp_path / "whole"), _rows(tmp_path / "merged")
    assert _without_durations(merged) == _without_durations(whole)
    scores = {row[0]: (row[1], float(row[2])) for row in whole[1:]}
    full = gf.points("prototypes") + gf.points("distances") + gf.points("loss")
    assert scores["correct.ipynb"] == ("ok", full) and scores["stub.ipynb"][1] == 0
    assert 0 < scores["wrong.ipynb"][1] < full
