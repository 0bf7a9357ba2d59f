"""`featurenerf.load` / `load_view`: a plain torch model from a checkpoint, no Lightning; the docs example."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import featurenerf
from featurenerf.data.srn import DataError
from featurenerf.nerf.model import FeatureNeRFNet
from featurenerf.orbit import default_camera

REPO = Path(__file__).resolve().parents[1]
TINY = dict(feature_dim=8, encoder_layers=2, d_hidden=16, n_coarse=8, n_fine=2, n_fine_depth=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A Lightning checkpoint of a random tiny model, and the LightningModule it came from."""
    import lightning as L

    from featurenerf.module import FeatureNeRF

    torch.manual_seed(0)
    model = FeatureNeRF(background="black", near=0.5, far=2.5, **TINY)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(model)
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    trainer.save_checkpoint(path)
    return path, model.eval()


def _image(path: Path, size: int = 24) -> Path:
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[4:-4, 6:-6] = (200, 30, 90, 255)  # an opaque box on a transparent background
    Image.fromarray(rgba).save(path)
    return path


def test_load_gives_the_plain_net_with_the_trained_weights(checkpoint, tmp_path):
    path, module = checkpoint
    net = featurenerf.load(path)
    assert type(net) is FeatureNeRFNet and not net.training
    assert (net.feature_dim, net.d_hidden, net.near, net.far, net.background_value) == (8, 16, 0.5, 2.5, 0.0)
    for name, value in module.net.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value, rtol=0, atol=0)

    view = featurenerf.load_view(_image(tmp_path / "a.png"), net)
    xyz = torch.rand(40, 3) - 0.5
    with torch.no_grad():
        a = net.point_features(net.encode(view.images, view.poses, view.focal, view.c), xyz)
        b = module.point_features(module.encode(view.images, view.poses, view.focal, view.c), xyz)
        fmap = net.render_features(
            net.encode(view.images, view.poses, view.focal, view.c),
            view.poses[:, 0],
            view.focal,
            view.c,
            6,
            5,
        )
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (40, 16) and fmap.shape == (1, 6, 5, 16)


def test_load_view_composites_on_the_nets_background_and_assumes_the_default_camera(checkpoint, tmp_path):
    net = featurenerf.load(checkpoint[0])  # black background, near/far 0.5/2.5
    view = featurenerf.load_view(_image(tmp_path / "a.png"), net, size=12)
    assert view.images.shape == (1, 1, 3, 12, 12) and view.size == (12, 12) and view.default_pose
    assert view.images[0, 0, :, 0, 0].tolist() == [0.0, 0.0, 0.0]  # transparent -> the net's black
    torch.testing.assert_close(view.images[0, 0, :, 6, 6], torch.tensor([200, 30, 90]) / 255.0)
    assert view.mask.sum() == 8 * 6  # the box, resized by 1/2
    torch.testing.assert_close(view.poses[0, 0], default_camera(0.5, 2.5))  # radius 1.5
    torch.testing.assert_close(view.focal, torch.tensor([[525 / 512 * 12] * 2]))
    torch.testing.assert_close(view.c, torch.tensor([[6.0, 6.0]]))


def test_load_view_reads_pose_and_intrinsics_files(checkpoint, tmp_path):
    net = featurenerf.load(checkpoint[0])
    pose = torch.arange(16.0).reshape(4, 4)
    (tmp_path / "pose.txt").write_text(" ".join(map(str, pose.reshape(-1).tolist())))
    (tmp_path / "intr.txt").write_text("100 50 40 0\n0 0 0\n1\n100 120\n")  # f cx cy / H W at 100 x 120
    view = featurenerf.load_view(
        _image(tmp_path / "a.png"), net, tmp_path / "pose.txt", tmp_path / "intr.txt"
    )
    assert not view.default_pose
    torch.testing.assert_close(view.poses[0, 0], pose)
    torch.testing.assert_close(view.focal, torch.tensor([[100 * 24 / 120, 100 * 24 / 100]]))
    torch.testing.assert_close(view.c, torch.tensor([[50 * 24 / 120, 40 * 24 / 100]]))


def test_bad_checkpoints_are_one_line_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt: checkpoint file not found"):
        featurenerf.load(tmp_path / "missing.ckpt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(
        DataError, match=r"text\.ckpt: not a checkpoint \(not a file torch.save writes\)"
    ) as err:
        featurenerf.load(tmp_path / "text.ckpt")
    assert "\n" not in str(err.value)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hyper_parameters": {}}, tmp_path / "other.ckpt")
    with pytest.raises(DataError, match=r"other\.ckpt: not a featurenerf checkpoint \(no net"):
        featurenerf.load(tmp_path / "other.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": {}, "extra": Path("x")}, tmp_path / "pickled.ckpt")
    with pytest.raises(DataError, match=r"pickled\.ckpt: refusing to unpickle.*pass trust=True"):
        featurenerf.load(tmp_path / "pickled.ckpt")


def test_training_image_size_comes_from_the_runs_config(checkpoint):
    from featurenerf.api import training_image_size

    path = checkpoint[0]
    assert training_image_size(path) is None  # no config.yaml beside checkpoints/
    (path.parent.parent / "config.yaml").write_text("data:\n  image_size: 48\n")
    try:
        assert training_image_size(path) == 48
    finally:
        (path.parent.parent / "config.yaml").unlink()


def _run(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_load_imports_neither_lightning_nor_teachers(checkpoint):
    code = (
        "import sys, featurenerf\n"
        "assert 'torch' not in sys.modules, 'import featurenerf pulled in torch'\n"
        f"net = featurenerf.load({str(checkpoint[0])!r})\n"
        "print(type(net).__name__, sorted(m for m in ('lightning', 'pytorch_lightning', 'transformers', "
        "'diffusers', 'wandb') if m in sys.modules))\n"
    )
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "FeatureNeRFNet []"


def test_docs_python_api_example_runs_verbatim(checkpoint, tmp_path):
    """The fenced python block of docs/python_api.md, run in a folder laid out as the doc says."""
    text = (REPO / "docs" / "python_api.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    ckpt = tmp_path / "outputs" / "runs" / "toy" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(checkpoint[0], ckpt)
    obj = tmp_path / "data" / "toy_cars" / "toycar_test" / "obj0004"
    (obj / "rgb").mkdir(parents=True)
    (obj / "pose").mkdir()
    _image(obj / "rgb" / "000000.png", size=128)
    (obj / "pose" / "000000.txt").write_text(
        " ".join(map(str, default_camera(0.8, 1.8).reshape(-1).tolist()))
    )
    (obj / "intrinsics.txt").write_text("131.25 64 64 0\n0 0 0\n1\n128 128\n")
    res = _run(code + "\nimport sys\nassert 'lightning' not in sys.modules\n", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last == "torch.Size([3, 16]) torch.Size([1, 64, 64, 16]) torch.Size([1, 64, 64, 3])"
