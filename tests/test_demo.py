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
