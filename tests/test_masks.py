"""Mask generators, the ratio presets, file conventions, folders and the export command."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pconv.errors import InputError
from pconv.masks import (
    CONTACT_SHEET,
    KINDS,
    RATIO_BINS,
    MaskFolder,
    band_mask,
    box_mask,
    free_form_mask,
    generate,
    image_files,
    mask_files,
    parse_kind,
    parse_ratio,
    random_strokes,
    ratio_mask,
    read_mask,
    solid_mask,
    write_mask,
)
from pconv.masks.__main__ import main as masks_main


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: random_strokes(64, 80, r),
        lambda r: free_form_mask(64, 80, r, "thick"),
        lambda r: box_mask(64, 80, r),
        lambda r: solid_mask(64, 80, r, "ellipses"),
        lambda r: solid_mask(64, 80, r, "blobs"),
        lambda r: ratio_mask(64, 80, r, (0.2, 0.3), "free-form"),
        lambda r: ratio_mask(64, 80, r, (0.2, 0.3), "solid"),
        lambda r: generate(64, 80, r, "mixed", (0.1, 0.4)),
    ],
)
def test_same_seed_same_mask_and_different_seeds_differ(make):
    a, b, c = make(rng(5)), make(rng(5)), make(rng(6))
    assert a.dtype == bool and a.shape == (64, 80)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0 < (~a).sum() < a.size  # some holes, not all


@pytest.mark.parametrize("name,bounds", list(RATIO_BINS.items()))
@pytest.mark.parametrize("kind", ["strokes", "thick", "solid"])
def test_every_ratio_bin_preset_lands_inside_its_bin(name, bounds, kind):
    low, high = bounds
    for seed in range(15):
        hole_ratio = 1 - ratio_mask(96, 96, rng(seed), parse_ratio(name), kind).mean()
        assert low < hole_ratio <= high, (name, seed, hole_ratio)


def test_unconstrained_generators_cover_a_useful_range():
    ratios = [1 - random_strokes(128, 128, rng(s)).mean() for s in range(30)]
    assert 0.02 < np.median(ratios) < 0.7


def test_free_form_presets_get_thicker():
    area = {p: np.mean([1 - free_form_mask(128, 128, rng(s), p).mean() for s in range(20)]) for p in ("thin", "thick")}
    assert area["thin"] < area["thick"]


def test_solid_holes_are_single_filled_regions():
    """A solid hole has no known pixel inside it: one connected hole region, no gaps in its hull."""
    import cv2

    for kind in ("boxes", "ellipses", "blobs"):
        for seed in range(10):
            r = rng(seed)
            canvas = np.zeros((96, 96), np.uint8)
            from pconv.masks.generators import _PRIMITIVES

            _PRIMITIVES[kind](96, 96, r)[0](canvas)
            count, _ = cv2.connectedComponents(canvas)
            assert count == 2, (kind, seed)  # background + one hole
            holes = cv2.connectedComponents(1 - canvas)[0]
            assert holes == 2, (kind, seed)  # the known part has no enclosed islands


def test_mixtures_parse_normalise_and_draw_every_kind():
    assert parse_kind("strokes") == {"strokes": 1.0}
    assert parse_kind("strokes=1,solid=3") == {"strokes": 0.25, "solid": 0.75}
    assert parse_kind("thick,boxes") == {"thick": 0.5, "boxes": 0.5}
    assert sum(parse_kind("mixed").values()) == pytest.approx(1)
    for bad, match in [
        ("strokes=x", "number"),
        ("spiral=1", "unknown mask kind"),
        ("strokes=0", "positive sum"),
        ("strokes=-1,solid=2", "non-negative"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_kind(bad)
    # each component of a mixture is drawn: box-only and stroke-only masks both appear
    import cv2

    rects = strokes = 0
    for seed in range(40):
        holes = (~generate(64, 64, rng(seed), "boxes=1,thin=1")).astype(np.uint8)
        x, y, w, h = cv2.boundingRect(holes)
        filled = holes.sum() / (w * h)
        rects += filled == 1.0
        strokes += filled < 0.7
    assert rects > 5 and strokes > 5


def test_band_mask():
    known = band_mask(10, 4, 3)
    assert known[:7].all() and not known[7:].any()
    assert not band_mask(10, 4, 2, side="top")[:2].any()
    with pytest.raises(ValueError):
        band_mask(10, 4, 10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="ratio"):
        parse_ratio("0.3-0.2")
    with pytest.raises(ValueError, match="ratio"):
        parse_ratio("half")
    with pytest.raises(ValueError, match="unknown mask kind"):
        generate(32, 32, rng(), kind="spiral")
    assert set(KINDS) >= {"strokes", "free-form", "boxes", "thin", "medium", "thick"}


def test_write_read_round_trip_and_convention(tmp_path):
    known = random_strokes(40, 50, rng())
    write_mask(tmp_path / "m.png", known)
    pixels = np.asarray(Image.open(tmp_path / "m.png"))
    assert pixels.dtype == np.uint8 and set(np.unique(pixels)) <= {0, 255}
    assert (pixels[~known] == 255).all()  # white = hole
    back, rule = read_mask(tmp_path / "m.png")
    assert np.array_equal(back, known) and "luminance" in rule
    inverted, _ = read_mask(tmp_path / "m.png", invert=True)
    assert np.array_equal(inverted, ~known)


def test_read_rgba_uses_alpha_and_rgb_uses_luminance(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255  # colour says nothing; alpha marks the hole
    rgba[2:4, 2:4, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    known, rule = read_mask(tmp_path / "a.png")
    assert "alpha" in rule and (~known).sum() == 4 and not known[2, 2]
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[5, 5] = (200, 200, 200)
    rgb[6, 6] = (100, 100, 100)  # darker than 127: known
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    known, rule = read_mask(tmp_path / "c.jpg")
    assert "luminance" in rule and not known[5, 5] and known[6, 6]


def test_read_errors(tmp_path):
    with pytest.raises(InputError, match="mask not found"):
        read_mask(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read mask"):
        read_mask(tmp_path / "bad.png")


def test_mask_folder_augments_and_stays_binary(tmp_path):
    (tmp_path / "sub").mkdir()
    for i in range(3):
        write_mask(tmp_path / "sub" / f"{i}.png", random_strokes(48, 40, rng(i)))
    folder = MaskFolder(tmp_path, (64, 64))
    assert len(folder) == 3
    r = rng(0)
    samples = [folder.sample(r) for _ in range(10)]
    assert all(s.dtype == bool and s.shape == (64, 64) for s in samples)
    assert len({s.tobytes() for s in samples}) > 1
    plain = MaskFolder(tmp_path, (24, 20), augment=False).sample(rng(1))
    assert plain.shape == (24, 20)


def test_mask_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        MaskFolder(tmp_path / "nope", (8, 8))
    with pytest.raises(ValueError, match="no mask images"):
        MaskFolder(tmp_path, (8, 8))


def test_export_command_writes_masks_and_contact_sheet(tmp_path):
    assert (
        masks_main(
            [
                "export",
                "--count",
                "3",
                "--size",
                "64",
                "--ratio",
                "0.1-0.2",
                "--seed",
                "1",
                "--out",
                str(tmp_path / "set"),
            ]
        )
        == 0
    )
    files = sorted((tmp_path / "set").glob("0*.png"))
    assert len(files) == 3 and (tmp_path / "set" / "contact_sheet.png").is_file()
    # the sheet is a preview: folder readers never take it for a mask
    from pconv.masks import mask_files

    assert [p.name for p in mask_files(tmp_path / "set")] == [p.name for p in files]
    assert len(MaskFolder(tmp_path / "set", (32, 32)).files) == 3
    for f in files:
        known, _ = read_mask(f)
        assert known.shape == (64, 64) and 0.1 < 1 - known.mean() <= 0.2
    # the same seed reproduces the set
    masks_main(
        [
            "export",
            "--count",
            "3",
            "--size",
            "64",
            "--ratio",
            "0.1-0.2",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "again"),
        ]
    )
    assert (tmp_path / "again" / "0002.png").read_bytes() == files[2].read_bytes()


def test_export_bins(tmp_path):
    masks_main(["export", "--count", "2", "--size", "48x64", "--bins", "--kind", "boxes", "--out", str(tmp_path)])
    for name, (low, high) in RATIO_BINS.items():
        for f in (tmp_path / name).glob("0*.png"):
            known, _ = read_mask(f)
            assert known.shape == (48, 64) and low < 1 - known.mean() <= high


def test_export_bad_arguments_exit_2(capsys):
    for argv in (
        ["export", "--out", "x", "--ratio", "0.5-0.1"],
        ["export", "--out", "x", "--count", "0"],
        ["export", "--out", "x", "--size", "big"],
    ):
        with pytest.raises(SystemExit) as err:
            masks_main(argv)
        assert err.value.code == 2


def test_band_kind_draws_bottom_rows_within_the_ratio():
    for seed in range(20):
        known = generate(50, 30, rng(seed), "band", (0.1, 0.3))
        rows = int((~known).all(axis=1).sum())
        assert (~known)[-rows:].all() and known[: 50 - rows].all() and 0.1 < rows / 50 <= 0.3
    assert not np.array_equal(generate(50, 30, rng(1), "band"), generate(50, 30, rng(2), "band"))


def test_image_files_follow_symlinked_folders_once_and_skip_other_files(tmp_path):
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.JPG", "notes.txt"):
        (real / name).write_bytes(b"x")
    (real / "folder.png").mkdir()  # a folder with an image suffix is not a file
    root = tmp_path / "set"
    root.mkdir()
    (root / "linked").symlink_to(real, target_is_directory=True)
    (real / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a cycle
    assert image_files(root) == [root / "linked" / "a.png", root / "linked" / "sub" / "b.JPG"]
    write_mask(real / CONTACT_SHEET, np.ones((4, 4), bool))
    assert len(image_files(root)) == 3
    assert mask_files(root) == [root / "linked" / "a.png", root / "linked" / "sub" / "b.JPG"]  # no sheet
