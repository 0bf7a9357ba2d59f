"""``--tasks.render_precision``: the fields render in bf16 autocast or float32, labels are always matched in
float32, and the results say which."""

from __future__ import annotations

import json

import pytest
import torch
from test_tasks_e2e import TINY, save_checkpoint, write_config


def _view():
    """One posed 32-px view of a tiny random scene (the camera 1.3 units out on +z, looking at the
    origin), with a disc of foreground pixels."""
    from featurenerf.tasks.descriptors import PosedView

    g = torch.Generator().manual_seed(0)
    pose = torch.eye(4)
    pose[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # looks down -z whichever convention
    pose[2, 3] = 1.3
    ii, jj = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mask = (ii - 15.5) ** 2 + (jj - 15.5) ** 2 < 10**2
    return PosedView(
        "obj",
        0,
        torch.rand(3, 32, 32, generator=g),
        mask,
        pose,
        torch.tensor([40.0, 40.0]),
        torch.tensor([16.0, 16.0]),
    )


def _net():
    from featurenerf.nerf.model import FeatureNeRFNet

    torch.manual_seed(0)
    return FeatureNeRFNet(feature_dim=6, **TINY).eval()


@pytest.mark.parametrize(
    ("precision", "flags", "want"),
    [
        ("32", "avx512_bf16", None),
        ("bf16", "", torch.bfloat16),
        ("auto", "fpu avx512f avx512_bf16", torch.bfloat16),
        ("auto", "fpu amx_bf16", torch.bfloat16),
        ("auto", "fpu avx2 avx512f", None),
    ],
)
def test_render_dtype_follows_the_option_and_on_auto_the_cpu(tmp_path, monkeypatch, precision, flags, want):
    from featurenerf import precision as prec
    from featurenerf.tasks.precision import render_dtype

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(prec, "CPUINFO", cpuinfo)
    dtype, why = render_dtype(precision, torch.device("cpu"))
    assert dtype is want
    assert why.startswith("bf16 autocast" if want is torch.bfloat16 else "float32")
    if precision == "auto":
        assert "render_precision auto: CPU reports" in why


@pytest.fixture
def no_grad():
    with torch.no_grad():
        yield


def test_bf16_renders_are_autocast_and_stay_close_while_float32_is_the_plain_render(no_grad):
    from featurenerf.tasks.descriptors import Descriptors, encode_view, pixel_uv, query_points, render_pixels

    net, view = _net(), _view()
    plain = render_pixels(net, encode_view(net, view), view, pixel_uv(view.foreground_ij()), ("hidden",))
    plain = torch.nn.functional.normalize(plain["hidden"], dim=-1)
    fp32 = Descriptors({"model": net}, ["featurenerf"], render_dtype=None)
    bf16 = Descriptors({"model": net}, ["featurenerf"], render_dtype=torch.bfloat16)
    a, b = fp32.foreground("featurenerf", view, view), bf16.foreground("featurenerf", view, view)
    assert torch.equal(a, plain)
    # Matching takes float32 either way; the bf16 render differs (autocast was on) but only by rounding.
    assert a.dtype == b.dtype == torch.float32
    assert not torch.equal(a, b)
    assert (a * b).sum(-1).min() > 0.99
    xyz = torch.rand(50, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    pa, pb = fp32.points("featurenerf", xyz, view, "pts"), bf16.points("featurenerf", xyz, view, "pts")
    direct = query_points(net, encode_view(net, view), view, xyz, ("hidden",))["hidden"]
    assert torch.equal(pa, torch.nn.functional.normalize(direct, dim=-1))
    assert pb.dtype == torch.float32 and not torch.equal(pa, pb) and (pa * pb).sum(-1).min() > 0.99


def test_validate_records_the_render_precision_and_refuses_an_unknown_one(toy_root, tmp_path, capfd):
    from featurenerf.cli import main

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", feature_dim=0)
    config = write_config(tmp_path / "config.yaml", toy_root, tmp_path / "runs")
    base = ["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--tasks.split", "train"]
    base += ["--task", "part_seg_3d", "novel_view", "--tasks.num_pairs", "2"]
    out = tmp_path / "run" / "tasks"
    per_precision = {}
    for precision in ("32", "bf16"):
        assert main([*base, "--tasks.render_precision", precision]) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["protocol"]["render_precision"] == precision
        md = (out / "results.md").read_text()
        words = "float32" if precision == "32" else "bf16 autocast"
        assert (
            f"- fields rendered in {words} (--tasks.render_precision {precision}); labels matched in float32"
            in md
        )
        per_precision[precision] = results["novel_view"]["featurenerf"]["cross_view/PSNR"]
    # The same untrained model's renders: close in either precision, not bit-equal.
    assert per_precision["bf16"] == pytest.approx(per_precision["32"], abs=0.5)
    assert per_precision["bf16"] != per_precision["32"]
    capfd.readouterr()
    assert main([*base, "--tasks.render_precision", "fp16"]) != 0
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "render_precision" in err[0]
