"""Split lists (persec.data.splits, `persec data split --lists/--check`) and reading a
part as DIR:PART; the committed lists of the real sets against ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import png
from tiny import REPO

from persec.data.folder import holdout_indices
from persec.data.gtfile import read_gt_file
from persec.data.layouts import find_datasets, open_dataset
from persec.data.splits import check_split, make_split, parse_part, read_list, write_split
from persec.errors import DataError

SPLITS = REPO / "data" / "splits"
SHARED = REPO.parent / "shared" / "data"


def grouped_set(root: Path, sources: int = 12, per_source: int = 5) -> list[str]:
    """``images/img_<source>_<n>.png`` (distinct images), plus two byte-identical
    copies: ``img_0_0`` again as ``img_99_0`` and ``img_1_1`` as ``img_1_9``."""
    (root / "images").mkdir(parents=True)
    lines, seed = [], 0
    for s in range(sources):
        for n in range(per_source):
            rel = f"images/img_{s}_{n}.png"
            (root / rel).write_bytes(png(seed=seed))
            lines.append(f"{rel}\tw{seed}")
            seed += 1
    for rel, same in [("images/img_99_0.png", "img_0_0"), ("images/img_1_9.png", "img_1_1")]:
        (root / rel).write_bytes((root / "images" / f"{same}.png").read_bytes())
        lines.append(f"{rel}\tcopy")
    (root / "gt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [line.split("\t")[0] for line in lines]


def source(rel: str) -> str:
    return Path(rel).name.split("_")[1]


def test_split_removes_duplicates_keeps_groups_whole_and_covers_the_set(tmp_path):
    rels = grouped_set(tmp_path / "set")
    split = make_split(tmp_path / "set", ratios=(70, 15, 15), seed=3, group_by=r"^img_(\d+)_")
    parts = split.parts
    assert list(parts) == ["train", "select", "report"]
    removed = {d["removed"]: d["same_as"] for d in split.manifest["duplicates"]}
    assert removed == {"images/img_99_0.png": "images/img_0_0.png",
                       "images/img_1_9.png": "images/img_1_1.png"}  # fmt: skip
    placed = [rel for part in parts.values() for rel in part]
    assert len(placed) == len(set(placed)) == len(rels) - 2
    assert set(placed) | set(removed) == set(rels)
    for part, members in parts.items():  # no source image straddles two parts
        others = {source(r) for p, m in parts.items() if p != part for r in m}
        assert not others & {source(r) for r in members}
    # 12 groups of 5: the cut by ratio gives 8 / 2 / 2 groups (70% of 60 = 42 → 40..45).
    assert [len(parts[p]) for p in parts] == [40, 10, 10]
    assert all(p == sorted(p, key=rels.index) for p in parts.values())  # gt.txt order
    assert split.manifest["parts"]["train"]["images"] == 40
    assert sorted(g for gs in split.manifest["groups"].values() for g in gs) == sorted(
        str(s) for s in range(12)
    )
    again = make_split(tmp_path / "set", ratios=(0.7, 0.15, 0.15), seed=3, group_by=r"^img_(\d+)_")
    assert again.parts == parts  # a seed gives one split, whatever the ratios' scale
    assert make_split(tmp_path / "set", seed=4, group_by=r"^img_(\d+)_").parts != parts


def test_fixed_part_and_given_group_parts(tmp_path):
    rels = grouped_set(tmp_path / "set", sources=4, per_source=5)
    fixed = rels[:7]
    split = make_split(
        tmp_path / "set", parts=("select", "report"), ratios=(1, 1), fixed={"train": fixed}
    )
    assert split.parts["train"] == fixed
    assert split.manifest["parts"]["train"]["fixed"] is True
    copies = {"images/img_99_0.png", "images/img_1_9.png"}  # of fixed images
    rest = [r for r in rels if r not in fixed and r not in copies]
    assert sorted(split.parts["select"] + split.parts["report"]) == sorted(rest)
    assert abs(len(split.parts["select"]) - len(split.parts["report"])) <= 1
    given = {"0": "report", "1": "train", "2": "train", "3": "select", "99": "train"}
    split = make_split(tmp_path / "set", group_by=r"^img_(\d+)_", group_parts=given)
    assert {source(r) for r in split.parts["report"]} == {"0"}
    with pytest.raises(DataError, match=r"groups \['3'\]"):
        make_split(tmp_path / "set", group_by=r"^img_(\d+)_", group_parts={"0": "train"} | {
            k: "train" for k in ("1", "2", "99")})  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratios": (70, 30)}, "3 parts"),
        ({"ratios": (70, 0, 30)}, "positive"),
        ({"parts": ("a", "a", "b")}, "distinct"),
        ({"fixed": {"train": ["images/nope.png"]}, "parts": ("x",), "ratios": (1,)}, "lacks"),
        ({"group_by": r"^page(\d+)"}, "does not match"),
    ],
)
def test_bad_split_settings_are_named(tmp_path, kwargs, message):
    grouped_set(tmp_path / "set", sources=2)
    with pytest.raises(DataError, match=message):
        make_split(tmp_path / "set", **kwargs)


def test_check_finds_a_changed_image_and_overlapping_lists(tmp_path):
    grouped_set(tmp_path / "set")
    write_split(make_split(tmp_path / "set"), tmp_path / "lists")
    assert check_split(tmp_path / "set", tmp_path / "lists") == []
    select = read_list(tmp_path / "lists" / "select.txt")
    (tmp_path / "set" / select[0]).write_bytes(png(seed=999))
    problems = check_split(tmp_path / "set", tmp_path / "lists")
    assert any("differ from those split" in p for p in problems)
    assert any("part select does not match" in p for p in problems)
    with open(tmp_path / "lists" / "report.txt", "a", encoding="utf-8") as f:
        f.write(select[1] + "\n")
    assert any(f"{select[1]} is in parts select and report" in p
               for p in check_split(tmp_path / "set", tmp_path / "lists"))  # fmt: skip


def test_a_part_reads_as_dir_colon_part(tmp_path, monkeypatch):
    grouped_set(tmp_path / "myset")
    split = make_split(tmp_path / "myset")
    write_split(split, tmp_path / "splits" / "myset")
    monkeypatch.setenv("PERSEC_SPLITS", str(tmp_path / "splits"))
    data = open_dataset(f"{tmp_path / 'myset'}:report", charset=None)
    assert data.name == "myset:report"
    assert len(data) == len(split.parts["report"]) and data.report.skipped == 0
    labels = dict(read_gt_file(tmp_path / "myset" / "gt.txt"))
    assert [data.label(i) for i in range(len(data))] == [labels[r] for r in split.parts["report"]]
    listed = open_dataset(f"{tmp_path / 'myset'}:{tmp_path / 'splits/myset/select.txt'}")
    assert len(listed) == len(split.parts["select"])
    with pytest.raises(DataError, match="parts there: report, select, train"):
        open_dataset(f"{tmp_path / 'myset'}:test")
    assert find_datasets([f"{tmp_path / 'myset'}:select"]) == [Path(f"{tmp_path / 'myset'}:select")]
    assert parse_part(tmp_path / "myset") == (tmp_path / "myset", None)
    colon = tmp_path / "a:b"
    colon.mkdir()
    assert parse_part(colon) == (colon, None)  # an existing path is never cut


def test_cli_writes_and_checks_a_split(tmp_path, run_cli):
    grouped_set(tmp_path / "set")
    code, out, _ = run_cli(["data", "split", str(tmp_path / "set"), "--lists",
                            str(tmp_path / "l"), "--group-by", r"^img_(\d+)_"])  # fmt: skip
    assert code == 0 and "2 duplicate images removed" in out
    assert json.loads((tmp_path / "l" / "manifest.json").read_text())["group_by"] == r"^img_(\d+)_"
    code, out, _ = run_cli(["data", "split", str(tmp_path / "set"), "--check", str(tmp_path / "l")])
    assert code == 0 and out.strip().endswith("ok")
    code, _, err = run_cli(
        ["data", "split", str(tmp_path / "set"), "--lists", "x", "--ratios", "a"]
    )
    assert code != 0 and "--ratios" in err


# ------------------------------------------------ the committed lists of the real sets
COMMITTED = sorted(p.parent.name for p in SPLITS.glob("*/manifest.json"))


def test_the_committed_lists_are_disjoint_and_agree_with_their_manifests():
    assert COMMITTED == ["GW_lines_train", "GW_words_train", "IC13_borndigital_train",
                         "IC15_train", "IIIT5K_train", "SVT_train"]  # fmt: skip
    for name in COMMITTED:
        manifest = json.loads((SPLITS / name / "manifest.json").read_text("utf-8"))
        seen: set[str] = set()
        for part, info in manifest["parts"].items():
            rels = read_list(SPLITS / name / f"{part}.txt")
            assert len(rels) == info["images"] and not seen & set(rels), (name, part)
            seen |= set(rels)
        removed = {d["removed"] for d in manifest["duplicates"]}
        assert len(seen) + len(removed) == manifest["inputs"]["images"], name
    pages = [json.loads((SPLITS / s / "manifest.json").read_text())["groups"]
             for s in ("GW_words_train", "GW_lines_train")]  # fmt: skip
    assert pages[0] == pages[1]  # one page list for words and lines


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_lists_match_the_shared_data(name):
    if not (SHARED / name / "gt.txt").is_file():
        pytest.skip(f"{SHARED / name} is not on this machine: the lists cannot be checked")
    assert check_split(SHARED / name, SPLITS / name) == []


def test_iiit5k_select_and_report_are_the_shipped_models_held_out_crops():
    if not (SHARED / "IIIT5K_train" / "gt.txt").is_file():
        pytest.skip(f"{SHARED / 'IIIT5K_train'} is not on this machine")
    entries = read_gt_file(SHARED / "IIIT5K_train" / "gt.txt")
    held = holdout_indices(len(entries), 500, seed=0)  # `make train-shipped`'s split
    heldout = {rel for i, (rel, _) in enumerate(entries) if i in held}
    parts = {p: set(read_list(SPLITS / "IIIT5K_train" / f"{p}.txt")) for p in
             ("train", "select", "report")}  # fmt: skip
    assert len(parts["select"]) == len(parts["report"]) == 250
    assert parts["select"] | parts["report"] == heldout
    assert parts["train"] == {rel for rel, _ in entries} - heldout


def test_groups_sharing_a_copy_are_merged_and_bad_settings_named(tmp_path):
    grouped_set(tmp_path / "set")  # img_99_0 copies img_0_0: groups 0 and 99 merge
    (tmp_path / "set" / "images" / "img_99_1.png").write_bytes(png(seed=500))
    with open(tmp_path / "set" / "gt.txt", "a", encoding="utf-8") as f:
        f.write("images/img_99_1.png\tmore\n")
    split = make_split(tmp_path / "set", group_by=r"^img_(\d+)_")
    parts = [p for p, rels in split.parts.items() if "images/img_99_1.png" in rels]
    assert parts and "images/img_0_0.png" in split.parts[parts[0]]  # one part
    assert split.manifest["merged_groups"] == {"99": "0"}
    with pytest.raises(DataError, match="not a regular expression"):
        make_split(tmp_path / "set", group_by="img_(")
    with pytest.raises(DataError, match="in fixed parts"):
        make_split(tmp_path / "set", parts=("x",), ratios=(1,),
                   fixed={"a": ["images/img_0_0.png"], "b": ["images/img_0_0.png"]})  # fmt: skip
    given = {str(s): "train" for s in range(12)} | {"0": "test"}
    with pytest.raises(DataError, match="uses parts"):
        make_split(tmp_path / "set", group_by=r"^img_(\d+)_", group_parts=given)
