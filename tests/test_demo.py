"""The demo's last step: pictures and results gathered from a run folder, and the README strip."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from featurenerf.demo import gather


def _png(path, colour, size=(30, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(path)


def test_gather_keeps_the_latest_pictures_and_makes_the_strip(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "out"
    _png(run / "pictures" / "novel_view_obj0_step000100.png", 10)
    _png(run / "pictures" / "novel_view_obj0_step000200.png", 200)  # the latest wins
    _png(run / "pictures" / "features_obj0_step000200.png", 50, size=(20, 20))
    _png(run / "tasks" / "pictures" / "part_seg_2d" / "cross_inst000_step000000.png", 90, size=(40, 10))
    _png(run / "tasks" / "pictures" / "part_seg_3d" / "cross_inst000_step000000.png", 91)
    (run / "tasks" / "results.md").write_text("| task | x |\n")
    (run / "novel_view.json").write_text(
        json.dumps({"val/psnr": 17.3, "val/psnr_copy_input": 13.0, "val/ssim": 0.76, "objects": 8})
    )
    gather(run, out)
    assert np.asarray(Image.open(out / "pictures" / "novel_view_obj0.png"))[0, 0, 0] == 200
    # same file names in two task folders stay apart
    assert (out / "pictures" / "part_seg_2d" / "cross_inst000.png").exists()
    assert (out / "pictures" / "part_seg_3d" / "cross_inst000.png").exists()
    strip = Image.open(out / "strip.png")
    # three pictures scaled to 160 px high, 8 px apart: 240 + 160 + 640 + 16
    assert strip.size == (240 + 160 + 640 + 16, 160)
    printed = capsys.readouterr().out
    assert "| task | x |" in printed and "17.30 dB vs 13.00 dB" in printed
    assert json.loads((out / "run.json").read_text())["strip"].endswith("strip.png")


def _ink_columns(grid: np.ndarray, rows: slice) -> np.ndarray:
    """Which pixel columns hold dark text in ``rows`` of an RGB grid."""
    return (grid[rows].min(axis=2) < 128).any(axis=0)


def test_grid_titles_are_whole_and_apart():
    # The demo strip's feature grid at the toy config's 64 px: "rendered v (PCA)" is wider than a tile.
    import torch

    from featurenerf.visualize import image_grid

    tile = torch.ones(3, 64, 64)
    titles = ["teacher (PCA)", "rendered v (PCA)"]
    grid = image_grid([[tile, tile]], header=titles)
    single = [image_grid([[tile]], header=[t]) for t in titles]
    top = grid.shape[0] - 64 - 4  # the header band: everything above the padded row of tiles
    ink = _ink_columns(grid, slice(0, top))
    assert not ink[0] and not ink[-1]  # nothing runs off either edge
    edges = np.flatnonzero(np.diff(ink.astype(int)))
    gaps = np.diff(edges)[1::2]  # white runs between inked runs
    assert gaps.max() >= 4  # a clear gap between the two titles
    # each title is drawn in full: as many inked pixels as when it is alone in a grid
    widths = [_ink_columns(s, slice(0, top)).sum() for s in single]
    assert ink.sum() == sum(widths)


def test_grid_row_labels_sit_left_of_their_rows():
    import torch

    from featurenerf.visualize import image_grid

    rows = [[torch.ones(3, 16, 16)] * 2, [torch.ones(3, 16, 16)] * 2]
    plain = image_grid(rows)
    labelled = image_grid(rows, row_labels=["RGB", "features (PCA)"])
    assert labelled.shape[0] == plain.shape[0] and labelled.shape[1] > plain.shape[1]
    margin = labelled.shape[1] - plain.shape[1]
    for i in range(2):
        band = labelled[2 + i * 18 : 2 + i * 18 + 16, :margin]
        assert (band.min(axis=2) < 128).any(), i
