"""pconv.abtest: cases, blind pair sheets with the key kept apart, and the verdicts counted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_photo
from PIL import Image

from pconv.abtest import main, pair_sheet, tally, wilson_interval
from pconv.errors import InputError
from pconv.masks import read_mask, write_mask


@pytest.fixture()
def cases(tmp_path: Path) -> Path:
    """Eight 40x48 cases, and two folders of results: dark fills and bright fills."""
    root = tmp_path / "cases"
    for i in range(8):
        image = synthetic_photo(40, 48, seed=i)
        known = np.ones((40, 48), bool)
        known[10:25, 12:30] = False
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"c{i}.png")
        write_mask(root / "masks" / f"c{i}.png", known)
        for name, value in (("dark", 20), ("bright", 230)):
            (tmp_path / name).mkdir(exist_ok=True)
            Image.fromarray(np.where(known[..., None], image, value).astype(np.uint8)).save(
                tmp_path / name / f"c{i}.png"
            )
    return root


def _make(tmp_path: Path, cases: Path, *extra: str) -> int:
    return main(
        [
            "make",
            "--cases",
            str(cases),
            "--dirs",
            str(tmp_path / "dark"),
            str(tmp_path / "bright"),
            "--out",
            str(tmp_path / "sheets"),
            "--key",
            str(tmp_path / "key.json"),
            *extra,
        ]
    )


def test_sheets_show_each_side_as_the_key_says_and_sides_are_drawn_at_random(tmp_path, cases):
    assert _make(tmp_path, cases, "--seed", "3") == 0
    key = json.loads((tmp_path / "key.json").read_text())
    assert key["methods"] == ["dark", "bright"] and len(key["pairs"]) == 8
    sides = [entry["A"] for entry in key["pairs"].values()]
    assert set(sides) == {"dark", "bright"}  # both sides drawn (8 coin flips; fixed seed)
    assert {entry["case"] for entry in key["pairs"].values()} == {f"c{i}" for i in range(8)}
    for pair, entry in key["pairs"].items():
        sheet = np.asarray(Image.open(tmp_path / "sheets" / f"{pair}.png"))
        image = np.asarray(Image.open(cases / "images" / f"{entry['case']}.png"))
        known, _ = read_mask(cases / "masks" / f"{entry['case']}.png")
        fill = {"dark": 20, "bright": 230}
        expected = pair_sheet(
            image,
            known,
            np.where(known[..., None], image, fill[entry["A"]]).astype(np.uint8),
            np.where(known[..., None], image, fill[entry["B"]]).astype(np.uint8),
        )
        assert np.array_equal(sheet, expected), pair
    # the judge's folder holds the sheets, an empty verdicts file and instructions, never the key
    listed = sorted(p.name for p in (tmp_path / "sheets").iterdir())
    assert listed == sorted([*(f"pair-{i:03d}.png" for i in range(1, 9)), "README.txt", "verdicts.csv"])
    text = "".join((tmp_path / "sheets" / n).read_text() for n in ("README.txt", "verdicts.csv"))
    assert "dark" not in text and "bright" not in text


def test_the_key_may_not_sit_among_the_sheets(tmp_path, cases, capsys):
    argv = ["make", "--cases", str(cases), "--dirs", str(tmp_path / "dark"), str(tmp_path / "bright")]
    assert main([*argv, "--out", str(tmp_path / "s"), "--key", str(tmp_path / "s" / "k.json")]) == 2
    assert "the judge would see it" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_verdicts_are_counted_by_method_with_a_wilson_interval(tmp_path, cases, capsys):
    assert _make(tmp_path, cases) == 0
    key = json.loads((tmp_path / "key.json").read_text())
    # the judge prefers the bright fill every time, but calls the last pair a tie
    pairs = sorted(key["pairs"])
    rows = [[p, "A" if key["pairs"][p]["A"] == "bright" else "b"] for p in pairs[:-1]] + [[pairs[-1], " tie "]]
    with open(tmp_path / "verdicts.csv", "w", newline="") as f:
        csv.writer(f).writerows([["pair", "verdict"], *rows])
    assert main(["score", "--key", str(tmp_path / "key.json"), "--verdicts", str(tmp_path / "verdicts.csv")]) == 0
    out = capsys.readouterr().out
    assert "dark preferred 0, bright preferred 7, ties 1" in out and "dark in 0% of decided pairs" in out
    result = tally(key, {p: v.strip().upper() if v.strip() != "tie" else "tie" for p, v in rows})
    assert result.wins == {"dark": 0, "bright": 7} and result.ties == 1
    argv = ["score", "--key", str(tmp_path / "key.json"), "--verdicts", str(tmp_path / "verdicts.csv"), "--per-case"]
    assert main(argv) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()[1:]]
    expected = sorted((key["pairs"][p]["case"], p, "bright") for p in pairs[:-1])
    expected.append((key["pairs"][pairs[-1]]["case"], pairs[-1], "tie"))
    assert lines == [f"{case} ({pair}): {winner}" for case, pair, winner in sorted(expected)]


def test_wilson_interval_matches_the_formula():
    lo, hi = wilson_interval(8, 10)  # the textbook example: 0.490 to 0.943
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(19, 20)  # 0.764 to 0.991
    assert lo == pytest.approx(0.7639, abs=1e-4) and hi == pytest.approx(0.9911, abs=1e-4)


def test_bad_verdicts_are_one_line_errors(tmp_path, cases, capsys):
    assert _make(tmp_path, cases) == 0
    key = json.loads((tmp_path / "key.json").read_text())
    with pytest.raises(InputError, match="pairs have no verdict"):
        tally(key, {"pair-001": "A"})
    with pytest.raises(InputError, match="no pair pair-999"):
        tally(key, {**dict.fromkeys(key["pairs"], "A"), "pair-999": "B"})
    verdicts = tmp_path / "v.csv"
    verdicts.write_text("pair,verdict\npair-001,maybe\n")
    assert main(["score", "--key", str(tmp_path / "key.json"), "--verdicts", str(verdicts)]) == 2
    err = capsys.readouterr().err
    assert "line 2: verdict 'maybe'" in err and "write A, B or tie" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main(["score", "--key", str(tmp_path / "bad.json"), "--verdicts", str(verdicts)]) == 2
    assert "is not a key" in capsys.readouterr().err


def test_cases_and_methods_run_end_to_end(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_photo(80, 96, seed=i)).save(photos / f"p{i}.png")
    assert main(["cases", "--images", str(photos), "--size", "64", "--count", "3", "--out", str(tmp_path / "c")]) == 0
    masks = sorted((tmp_path / "c" / "masks").iterdir())
    assert len(masks) == 3
    for path in masks:
        known, _ = read_mask(path)
        assert known.shape == (64, 64) and 0.2 < (~known).mean() <= 0.6
    argv = ["make", "--cases", str(tmp_path / "c"), "--methods", "pushpull,telea", "--out", str(tmp_path / "s")]
    assert main([*argv, "--key", str(tmp_path / "k" / "key.json")]) == 0
    assert len(list((tmp_path / "s").glob("pair-*.png"))) == 3
    assert main([*argv, "--key", str(tmp_path / "k2.json"), "--methods", "telea"]) == 2
    assert "two different methods" in capsys.readouterr().err
