"""The resolution policy of pconv.inpaint: working scale per hole, exact known pixels, better big-hole fills."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import StandIn

from pconv import PConvUNet, load_model, save_model
from pconv.inpaint import inpaint
from pconv.io import DEFAULT_WEIGHTS, hole_depth_of
from pconv.tiling import DEFAULT_HOLE_DEPTH, MIN_LEVEL_SIDE, crop_boxes, hole_levels


def _known(h: int, w: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    known = np.ones((h, w), bool)
    for y0, y1, x0, x1 in boxes:
        known[y0:y1, x0:x1] = False
    return known


def test_levels_follow_each_holes_depth():
    # a 4-px line (depth 2), a 40-px square (depth 20) and a 160-px square (depth 80)
    known = _known(400, 400, (10, 14, 10, 200), (100, 140, 20, 60), (200, 360, 200, 360))
    levels = hole_levels(known, hole_depth=10)
    assert (levels[known] == 0).all()
    assert set(np.unique(levels[10:14, 10:200])) == {1}
    assert set(np.unique(levels[100:140, 20:60])) == {2}  # 20 / 10 -> 2
    assert set(np.unique(levels[200:360, 200:360])) == {8}  # 80 / 10 -> 8
    assert set(np.unique(hole_levels(known, hole_depth=100)[~known])) == {1}
    assert set(np.unique(hole_levels(known, hole_depth=10, max_factor=4)[~known])) == {1, 2, 4}


def test_a_thin_stroke_touching_a_big_hole_keeps_full_resolution_and_border_holes_count_their_depth():
    # an L: a 4-px bar (depth 2) touching a 146x100 rectangle (depth 50) is one hole; the
    # rectangle runs coarse, the bar away from it at full resolution
    known = _known(300, 300, (50, 54, 20, 150), (54, 200, 100, 200))
    levels = hole_levels(known, hole_depth=20)
    assert set(np.unique(levels[56:200, 100:200])) == {4}  # depth 50 / 20 -> 4
    assert set(np.unique(levels[50:54, 20:90])) == {1}
    # a thick offshoot (a 30-px bar, more than a quarter of the hole depth wide) goes with the hole
    thick = _known(300, 300, (40, 70, 20, 150), (54, 200, 100, 200))
    assert set(np.unique(hole_levels(thick, hole_depth=20)[~thick])) == {4}
    # a box's corners, which no disk of the hole depth reaches, still go with the box
    box = _known(300, 300, (50, 250, 50, 250))
    assert set(np.unique(hole_levels(box, hole_depth=10)[~box])) == {16}
    # a hole at the border: the image edge is not a known pixel, so its depth is the full width
    edge = _known(100, 100, (0, 100, 0, 10))
    assert set(np.unique(hole_levels(edge, hole_depth=4)[~edge])) == {4}  # depth 10 (from x=0 to 10) / 4 -> 4


def test_one_hole_over_most_of_the_image_is_capped_at_a_usable_resolution():
    known = _known(256, 256, (8, 248, 8, 248))
    levels = hole_levels(known, hole_depth=4, max_factor=256 // MIN_LEVEL_SIDE)
    assert set(np.unique(levels[~known])) == {4}
    model = _tiny()
    image = np.full((256, 256, 3), 90, np.uint8)
    out = inpaint(model, image, known, hole_depth=4).image
    assert np.array_equal(out[known], image[known])


def _covered(targets: np.ndarray, boxes: list[tuple[int, int, int, int]], tile: int) -> None:
    """Every target pixel lies in a crop; every crop lies in the image and is at most a tile wide."""
    cover = np.zeros(targets.shape, bool)
    for y, x, h, w in boxes:
        assert 0 <= y and 0 <= x and y + h <= targets.shape[0] and x + w <= targets.shape[1]
        assert 0 < h <= tile and 0 < w <= tile
        cover[y : y + h, x : x + w] = True
    assert cover[targets].all()


def test_a_small_hole_gets_one_crop_centred_on_it_with_context_on_every_side():
    targets = ~_known(1000, 1500, (400, 448, 700, 748))
    boxes = crop_boxes(targets, tile=512, overlap=128, align=128)
    assert boxes == [(288, 592, 256, 256)]  # 48 px + 2 x 64 -> 256; centred on a 16-px step
    _covered(targets, boxes, 512)
    y, x, h, w = boxes[0]
    assert min(400 - y, y + h - 448, 700 - x, x + w - 748) >= 90


def test_crops_at_the_border_stay_inside_the_image_and_nearby_holes_share_one():
    targets = ~_known(600, 900, (0, 30, 0, 30), (590, 600, 880, 900), (300, 320, 400, 420), (300, 320, 470, 490))
    boxes = crop_boxes(targets, tile=512, overlap=128, align=128)
    _covered(targets, boxes, 512)
    assert len(boxes) == 3  # the two holes 50 px apart share a crop; the corners get one each
    assert (0, 0) in [(y, x) for y, x, _, _ in boxes]
    assert any(y + h == 600 and x + w == 900 for y, x, h, w in boxes)


def test_a_hole_bigger_than_a_tile_is_covered_by_a_grid_of_crops():
    targets = ~_known(1200, 1200, (100, 1100, 100, 1100))
    targets[300:900, 300:900] = False  # an island of known pixels: tiles over it alone do not run
    boxes = crop_boxes(targets, tile=256, overlap=64, align=32)
    _covered(targets, boxes, 256)
    assert all(targets[y : y + h, x : x + w].any() for y, x, h, w in boxes)
    assert all((h, w) == (256, 256) for _, _, h, w in boxes) and len(boxes) < 36
    # a whole-image hole too: the crops tile the image
    _covered(np.ones((300, 300), bool), crop_boxes(np.ones((300, 300), bool), 128, 32, 32), 128)


def _tiny() -> PConvUNet:
    torch.manual_seed(0)
    return PConvUNet(depth=3, base_width=4).eval()


@pytest.mark.parametrize("scale", ["auto", 1, 2, 3.5])
def test_known_pixels_are_byte_identical_and_every_hole_is_filled(scale):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (150, 170, 3), dtype=np.uint8)
    known = _known(150, 170, (0, 40, 0, 60), (70, 75, 20, 160), (100, 148, 120, 168))
    out = inpaint(_tiny(), image, known, scale=scale, hole_depth=6)
    assert np.array_equal(out.image[known], image[known])
    # the holes hold the model's fill, not the input: a model predicting 1 everywhere gives 255 away
    # from the hole's edge (at coarse levels the upsampled fill blends into the known pixels there)
    ones = inpaint(_Const(1.0), image, known, scale=scale, hole_depth=6).image
    inner = cv2.erode((~known).astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
    assert inner.sum() > 500 and (ones[inner] == 255).all() and np.array_equal(ones[known], image[known])
    if scale == 1:
        assert (ones[~known] == 255).all()


class _Const(StandIn):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def predict(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.full_like(image, self.value)


class _Mean(StandIn):
    """Fills each hole pixel with the mean of the known pixels of its input: the coarse level sees
    far-away context, the full-resolution pass only its tile."""

    def predict(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean = (image * mask).sum((-2, -1), keepdim=True) / mask.sum((-2, -1), keepdim=True).clamp(min=1)
        return mean.expand_as(image).clone()


def test_coarse_levels_run_on_fewer_pixels_and_only_where_their_holes_are():
    image = np.full((1024, 1024, 3), 100, np.uint8)
    known = _known(1024, 1024, (100, 500, 100, 500), (900, 904, 900, 1000))
    full = inpaint(_Mean(), image, known, scale=1, tile=256)
    auto = inpaint(_Mean(), image, known, tile=256, hole_depth=20)
    assert auto.tiles < full.tiles
    assert (auto.image[~known] == 100).all()  # a constant image stays constant through both levels


def test_scale_must_be_auto_or_at_least_one():
    image = np.zeros((32, 32, 3), np.uint8)
    for bad in (0.5, 0, float("nan"), "half"):
        with pytest.raises(ValueError, match="scale"):
            inpaint(_tiny(), image, _known(32, 32, (4, 8, 4, 8)), scale=bad)


def test_hole_depth_comes_from_the_release_file(tmp_path):
    model = _tiny()
    save_model(model, tmp_path / "a.safetensors", extra={"training": json.dumps({"size": 512, "hole_depth": 91.5})})
    save_model(model, tmp_path / "b.safetensors", extra={"training": json.dumps({"size": 512})})
    save_model(model, tmp_path / "c.safetensors")
    assert load_model(tmp_path / "a.safetensors").hole_depth == 91.5
    assert load_model(tmp_path / "b.safetensors").hole_depth == DEFAULT_HOLE_DEPTH * 2  # older files: by crop size
    assert load_model(tmp_path / "c.safetensors").hole_depth == DEFAULT_HOLE_DEPTH
    assert hole_depth_of({"training": "not json"}) == DEFAULT_HOLE_DEPTH


@pytest.mark.slow
def test_released_model_fills_a_big_hole_in_a_smooth_image_with_its_gradient():
    """A smooth three-colour gradient with a 200-px hole at 512 px: the fill follows the gradient
    (2.5 levels off on average; push-pull 1.2, OpenCV Telea 6.1, the fifth release 3.2: ``python
    benchmarks/bench_flat.py --size 512 --hole 200``). The released residual model records a hole depth of
    128 px, so this hole (100 px deep) stays at full resolution under ``--scale auto``."""
    model = load_model(DEFAULT_WEIGHTS)
    y, x = np.mgrid[0:512, 0:512].astype(np.float32) / 511
    image = np.stack([60 + 140 * x, 80 + 100 * y, 160 - 60 * x * y], -1).round().astype(np.uint8)
    known = _known(512, 512, (150, 350, 160, 360))
    auto, full = (inpaint(model, image, known, scale=scale).image for scale in ("auto", 1))
    assert np.array_equal(auto, full)
    error = np.abs(auto[~known].astype(float) - image[~known]).mean()
    assert error < 3.0, error


@pytest.mark.parametrize("multiple, stroke_side", [(128, 128), (32, 96)])
def test_crops_follow_the_depth_of_the_holes(multiple, stroke_side):
    """A 20-px stroke runs in small crops along it (8 times its depth of 10 px, rounded up to the
    model's multiple), a deep blob in tile-size ones; every hole pixel is in some crop, with the
    crop's side a multiple of the model's."""
    from pconv.tiling import crop_plan

    known = _known(1500, 2000, (700, 720, 100, 1900), (100, 400, 100, 400))
    targets = ~known
    plan = crop_plan(targets, known, tile=512, multiple=multiple)
    covered = np.zeros_like(targets)
    sides = {}
    for (y, x, h, w), overlap in plan:
        covered[y : y + h, x : x + w] = True
        assert h % multiple == 0 and w % multiple == 0 and overlap == max(h, w) // 4
        part = "stroke" if y + h > 700 and y < 720 else "blob"
        sides.setdefault(part, set()).add(max(h, w))
    assert covered[targets].all()
    assert sides == {"stroke": {stroke_side}, "blob": {512}}  # depths 10 and 150 px
    stroke_pixels = sum(h * w for (y, x, h, w), _ in plan if y + h > 700 and y < 720)
    assert stroke_pixels < 0.4 * 512 * 1800  # a quarter of a row of 512-px tiles, give or take overlaps


def test_separate_groups_are_planned_independently():
    """A group's grid keeps only the crops that touch its own holes: a blob beside a diagonal
    stroke adds its one crop and no tile of the stroke's grid."""
    from pconv.tiling import crop_boxes

    stroke = np.zeros((200, 200), np.uint8)
    cv2.line(stroke, (10, 10), (190, 190), 1, 5)
    blob = np.zeros_like(stroke)
    cv2.circle(blob, (30, 170), 6, 1, -1)  # far from the stroke, inside its grid's span
    alone = [crop_boxes(part.astype(bool), 64, 16, 1) for part in (stroke, blob)]
    assert len(alone[1]) == 1
    assert crop_boxes((stroke | blob).astype(bool), 64, 16, 1) == sorted(set(alone[0] + alone[1]))


def test_the_holes_found_for_the_scales_give_the_crops_found_in_a_window():
    """crop_plan with the Holes found for the working scales plans what it plans finding them
    itself, for the full-resolution targets: small holes, and a thin stroke leaving a hole deep
    enough for a coarser scale (its offshoot stays at full resolution)."""
    from pconv.tiling import _hole_levels, crop_plan

    known = _known(1100, 1300, (400, 412, 50, 1250), (700, 705, 600, 640), (650, 1050, 100, 500), (840, 850, 500, 900))
    levels, holes = _hole_levels(known, 128.0, None)
    targets = levels == 1
    assert set(np.unique(levels[~known])) == {1, 2} and targets[845, 600:900].all()  # the offshoot
    assert sorted(crop_plan(targets, known, 512, 32, holes)) == sorted(crop_plan(targets, known, 512, 32))


def test_batched_crops_give_the_result_of_one_crop_at_a_time(monkeypatch):
    import pconv.inpaint as inpaint_module

    torch.manual_seed(0)
    model = PConvUNet(depth=3, base_width=4).eval()
    image = np.random.default_rng(1).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    known = _known(300, 420, (100, 110, 10, 400), (200, 206, 30, 380))
    batched = inpaint(model, image, known, tile=96, scale=1)
    monkeypatch.setattr(inpaint_module, "BATCH_CROPS", 1)
    single = inpaint(model, image, known, tile=96, scale=1)
    assert batched.tiles == single.tiles > 4
    assert np.abs(batched.image.astype(int) - single.image.astype(int)).max() <= 1


def test_crops_are_sized_to_the_holes_only_where_that_sends_fewer_pixels():
    from pconv.tiling import crop_boxes, crop_plan, crops_for

    def pixels(crops):
        return sum(h * w for (_, _, h, w), _ in crops)

    sparse = _known(1500, 2000, (700, 720, 100, 1900))  # one thin stroke: small crops along it
    dense = np.ones((1024, 1024), bool)
    for y in range(40, 1024, 200):
        dense[y : y + 60] = False  # wide bands everywhere: crops of their size overlap more than tiles
    for known in (sparse, dense):
        tiles = [(box, 128) for box in crop_boxes(~known, 512, 128, 128)]
        sized = crop_plan(~known, known, 512, 128)
        chosen = crops_for(~known, known, 512, None, 128)
        assert pixels(chosen) == min(pixels(tiles), pixels(sized))
    assert pixels(crops_for(~sparse, sparse, 512, None, 128)) < 0.5 * pixels(
        [(box, 128) for box in crop_boxes(~sparse, 512, 128, 128)]
    )


def test_one_plan_serves_the_work_budget_and_the_inpainting():
    """The pixels a server budgets are those inpaint sends through the model, and a plan made
    beforehand gives the same result as one inpaint makes itself."""
    from conftest import StandIn

    from pconv.inpaint import inpaint
    from pconv.options import InpaintOptions
    from pconv.tiling import make_plan, model_pixels

    class Counting(StandIn):
        multiple = 8
        hole_depth = 8.0
        seen = 0

        def predict(self, image, mask):
            Counting.seen += image.shape[0] * image.shape[-2] * image.shape[-1]
            return image.flip(-1)

    known = np.ones((300, 420), bool)
    known[20:30, 10:400] = False  # a thin stroke: full resolution, crops along it
    known[150:260, 200:330] = False  # a deep box: a coarser level
    image = (np.random.default_rng(0).random((300, 420, 3)) * 255).astype(np.uint8)
    options = InpaintOptions(tile=64)
    model = Counting()
    plan = make_plan(known, options, model.hole_depth, model.multiple)
    assert len(plan.levels) == 2 and model_pixels(known, options, model.hole_depth, model.multiple) == plan.pixels
    first = inpaint(model, image, known, options)
    assert Counting.seen == plan.pixels
    assert np.array_equal(inpaint(model, image, known, options, plan=plan).image, first.image)


def _crops_know(plan) -> bool:
    return all(lp.level.known[y : y + h, x : x + w].any() for lp in plan.levels for (y, x, h, w), _ in lp.crops or ())


def test_small_tiles_work_big_holes_coarser_so_that_every_crop_holds_known_pixels():
    """A 300-px box in a 4 MP photo with 64-px tiles at the model's hole depth (128) put crops wholly
    inside the hole at 1/2 scale, which the model filled black; with scale="auto" the tile now
    bounds the depth worked at, and every crop holds known pixels."""
    from pconv.options import InpaintOptions
    from pconv.tiling import make_plan

    known = _known(2048, 2048, (900, 1200, 900, 1200))
    for tile in (64, 96, 128):
        plan = make_plan(known, InpaintOptions(tile=tile), 128.0, 32)
        assert _crops_know(plan) and any(lp.crops for lp in plan.levels)
    # 150 px deep: 1/8 scale at tile 128 (a depth of 32 worked at) where 512-px tiles keep 1/2
    assert [lp.level.factor for lp in make_plan(known, InpaintOptions(tile=128), 128.0, 32).levels] == [8.0]
    assert [lp.level.factor for lp in make_plan(known, InpaintOptions(tile=512), 128.0, 32).levels] == [2.0]


@pytest.mark.parametrize(
    "shape, box, scale",
    [
        ((200, 1024), (0, 200, 150, 850), "auto"),  # a wide hole across a short image: 1/3 is as coarse as it goes
        ((512, 512), (100, 400, 100, 400), 2),  # a forced scale
    ],
)
def test_a_small_level_that_a_crop_would_miss_runs_in_one_pass(shape, box, scale):
    from pconv.options import InpaintOptions
    from pconv.tiling import make_plan

    known = _known(*shape, box)
    plan = make_plan(known, InpaintOptions(tile=64, scale=scale), 128.0, 32)
    assert _crops_know(plan)
    assert [lp.crops for lp in plan.levels] == [None]


def test_a_large_level_with_a_crop_inside_a_hole_is_refused():
    from pconv.errors import InputError
    from pconv.options import InpaintOptions
    from pconv.tiling import make_plan

    known = _known(1100, 1100, (100, 1000, 100, 1000))  # 1.2 MP at full resolution: too big for one pass
    with pytest.raises(InputError, match="64-px crop lies wholly inside a hole: .* pass a larger tile$"):
        make_plan(known, InpaintOptions(tile=64, scale=1), 128.0, 32)
    assert _crops_know(make_plan(known, InpaintOptions(tile=1024, scale=1), 128.0, 32))
