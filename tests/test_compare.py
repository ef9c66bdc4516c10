"""pconv.compare: paired differences of two methods on the same cases, and reports that do not match."""

from __future__ import annotations

import math

import pytest

from pconv.compare import beats, main, paired, read_cases
from pconv.errors import InputError, MissingFileError
from pconv.files import atomic_write_csv

HEADER = ["case", "bin", "method", "seconds", "l1", "psnr", "ssim", "hole_psnr", "edge"]


def _report(folder, rows):
    folder.mkdir()
    atomic_write_csv(
        folder / "cases.csv",
        [[case, b, method, 0.1, 1.0, psnr, ssim, 20.0, edge] for case, b, method, psnr, ssim, edge in rows],
        HEADER,
    )
    return folder


@pytest.fixture
def reports(tmp_path):
    """The model and push-pull in one report, push-pull and the release in another, on three cases."""
    a = _report(
        tmp_path / "a",
        [
            ("p/01-10-000", "01-10", "model", 30.0, 0.95, 5.0),
            ("p/01-10-001", "01-10", "model", 32.0, 0.96, 4.0),
            ("q/10-20-000", "10-20", "model", 25.0, 0.90, 8.0),
            ("p/01-10-000", "01-10", "pushpull", 29.0, 0.94, 6.0),
            ("p/01-10-001", "01-10", "pushpull", 32.5, 0.95, 4.0),
            ("q/10-20-000", "10-20", "pushpull", 24.0, 0.91, 9.0),
        ],
    )
    b = _report(
        tmp_path / "b",
        [
            ("p/01-10-000", "01-10", "pushpull", 29.0, 0.94, 6.0),
            ("p/01-10-001", "01-10", "pushpull", 32.5, 0.95, 4.0),
            ("q/10-20-000", "10-20", "pushpull", 24.0, 0.91, 9.0),
            ("p/01-10-000", "01-10", "release", 31.0, 0.93, 7.0),
            ("p/01-10-001", "01-10", "release", 33.0, 0.94, 6.0),
            ("q/10-20-000", "10-20", "release", 26.0, 0.89, 9.5),
        ],
    )
    return a, b


def test_paired_differences_per_bin_and_overall(reports):
    scores = read_cases(reports)
    assert set(scores) == {"model", "pushpull", "release"}
    psnr = paired(scores, "model", "pushpull", "psnr")
    assert [d.bin for d in psnr] == ["01-10", "10-20", "all"]
    first, second, overall = psnr
    # 01-10: differences +1.0 and -0.5 -> mean 0.25, SE = sd / sqrt(2) = 0.75
    assert first.mean == pytest.approx(0.25) and first.se == pytest.approx(0.75)
    assert (first.wins, first.cases, first.better) == (1, 2, True)
    assert second.mean == pytest.approx(1.0) and second.se == 0.0 and second.wins == 1
    diffs = [1.0, -0.5, 1.0]
    mean = sum(diffs) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2 / 3)
    assert overall.mean == pytest.approx(mean) and overall.se == pytest.approx(se) and overall.cases == 3


def test_lower_is_better_for_the_edge_error(reports):
    scores = read_cases(reports)
    edge = paired(scores, "model", "release", "edge")
    # differences -2.0, -2.0, -1.5: the model's edge error is lower in every case
    assert [d.wins for d in edge] == [2, 1, 3] and beats(edge)
    psnr = paired(scores, "model", "release", "psnr")
    assert not psnr[0].better and not beats(psnr)


def test_closer_to_the_target_is_better_for_detail(tmp_path):
    """detail's best is 1 (as much fine detail as the photo): 0.9 beats 0.5 and 1.6, 1.2 beats 0.7."""
    folder = tmp_path / "d"
    folder.mkdir()
    rows = [
        ["p/20-30-000", "20-30", "model", 0.9],
        ["p/20-30-001", "20-30", "model", 1.2],
        ["p/20-30-002", "20-30", "model", 1.6],
        ["p/20-30-000", "20-30", "pushpull", 0.5],
        ["p/20-30-001", "20-30", "pushpull", 0.7],
        ["p/20-30-002", "20-30", "pushpull", 0.9],
    ]
    atomic_write_csv(folder / "cases.csv", rows, ["case", "bin", "method", "detail"])
    detail = paired(read_cases([folder]), "model", "pushpull", "detail")
    # closeness gained per case: 0.5 - 0.1 = 0.4, 0.3 - 0.2 = 0.1, 0.1 - 0.6 = -0.5
    assert detail[-1].mean == pytest.approx(0.0) and detail[-1].wins == 2 and not detail[-1].better


def test_reports_of_different_masks_are_refused(tmp_path, reports):
    other = _report(tmp_path / "c", [("p/01-10-000", "01-10", "pushpull", 28.0, 0.94, 6.0)])
    with pytest.raises(InputError, match="scored different cases"):
        read_cases([reports[0], other])
    moved = _report(tmp_path / "d", [("p/01-10-000", "10-20", "release", 28.0, 0.94, 6.0)])
    with pytest.raises(InputError, match="different masks"):
        read_cases([reports[0], moved])


def test_unknown_names_and_missing_files_are_one_line_errors(tmp_path, reports, capsys):
    scores = read_cases(reports)
    with pytest.raises(InputError, match="no method 'telea'.*model, pushpull, release"):
        paired(scores, "model", "telea", "psnr")
    with pytest.raises(InputError, match="unknown metric"):
        paired(scores, "model", "release", "fid")
    with pytest.raises(MissingFileError, match="no cases.csv"):
        read_cases([tmp_path / "nowhere"])
    assert main([str(tmp_path / "nowhere"), "--model", "model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no cases.csv" in err and len(err.splitlines()) == 1


def test_older_reports_without_a_metric_still_compare_on_the_others(tmp_path, reports):
    old = tmp_path / "old"
    old.mkdir()
    header = [h for h in HEADER if h != "edge"]
    atomic_write_csv(old / "cases.csv", [["p/01-10-000", "01-10", "older", 0.1, 1.0, 28.0, 0.9, 20.0]], header)
    scores = read_cases([reports[0], old])
    assert paired(scores, "model", "older", "psnr")[0].mean == pytest.approx(2.0)
    with pytest.raises(InputError, match="no edge for older"):
        paired(scores, "model", "older", "edge")


def test_the_command_prints_each_table_and_a_verdict(reports, capsys):
    assert main([*map(str, reports), "--model", "model", "--metrics", "psnr,edge"]) == 0
    out = capsys.readouterr().out
    assert "## model - pushpull" in out and "## model - release" in out
    assert "| 01-10 | 2 | +0.250 +/- 0.750, 1/2 |" in out
    assert "model is behind release in psnr in 01-10, psnr in 10-20, psnr in all" in out
    assert "model is ahead of pushpull in psnr, edge in every bin" in out
