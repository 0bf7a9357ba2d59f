"""The ``canonical_coords`` diagnostic: its R² against hand-computed values, and the task on a net whose
coordinate head is made exact (every metric perfect) or constant (R² exactly 0 at the centroid)."""

from __future__ import annotations

import pytest
import torch

from featurenerf.tasks.coords import HALF_TURN, CanonicalCoords, coordinate_r2, turned_share


def test_r2_is_one_when_exact_zero_at_the_centroid_and_per_axis_by_hand():
    truth = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 1.0], [0.0, 2.0, -1.0], [2.0, 2.0, 0.0]])
    assert torch.allclose(coordinate_r2(truth, truth), torch.ones(4, dtype=torch.float64))
    centroid = truth.mean(0).expand_as(truth)
    assert torch.allclose(coordinate_r2(centroid, truth), torch.zeros(4, dtype=torch.float64))
    # x off by 1 everywhere: SSE_x = 4, spread_x = 4 -> R2_x = 0; y, z exact; overall 1 - 4 / (4 + 4 + 2).
    pred = truth + torch.tensor([1.0, 0.0, 0.0])
    want = torch.tensor([1 - 4 / 10, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(coordinate_r2(pred, truth), want)


class _HeadOverride(torch.nn.Module):
    """A real tiny net whose ``coords`` output is replaced: the truth plus an offset, or a constant."""

    def __init__(self, net, offset=None, constant=None, turned=False):
        super().__init__()
        self.net, self.offset, self.constant, self.turned = net, offset, constant, turned

    def encode(self, *args):
        return self.net.encode(*args)

    def query(self, cond, xyz, viewdirs=None):
        out = dict(self.net.query(cond, xyz, viewdirs))
        if self.turned:
            out["coords"] = xyz * xyz.new_tensor(HALF_TURN)
        else:
            out["coords"] = self.constant.expand_as(xyz) if self.constant is not None else xyz + self.offset
        return out


def _item(xyz: torch.Tensor) -> dict:
    eye = torch.eye(4)
    eye[2, 3] = -1.5  # a camera 1.5 units from the origin
    side = {
        "name": "obj",
        "image": torch.rand(3, 16, 16),
        "mask": torch.ones(16, 16),
        "pose": eye,
        "focal": torch.tensor([16.0, 16.0]),
        "c": torch.tensor([8.0, 8.0]),
        "points": xyz,
    }
    return {"kind": "cross_view", "pair": 0, "src": {**side, "view": 0}, "trg": {**side, "view": 1}}


@pytest.fixture()
def tiny_net():
    from featurenerf.nerf.model import FeatureNeRFNet

    torch.manual_seed(0)
    return FeatureNeRFNet(encoder_layers=1, d_hidden=16, n_blocks=1, n_inject=1, combine_layer=1).eval()


def _run(net) -> dict[str, float]:
    from featurenerf.tasks.base import TaskContext
    from featurenerf.tasks.descriptors import Descriptors

    task = CanonicalCoords(methods=["featurenerf"])
    xyz = torch.tensor([[0.3, 0.0, 0.1], [-0.3, 0.1, 0.0], [0.0, -0.2, 0.2], [0.1, 0.2, -0.1]])
    ctx = TaskContext(descriptors=Descriptors({"model": net}, ["featurenerf"]), models={"model": net})
    with torch.no_grad():
        task.step(ctx, _item(xyz))
    return task.compute()["featurenerf"], xyz


def test_an_exact_head_scores_perfectly_and_an_offset_one_by_its_distance(tiny_net):
    got, _ = _run(_HeadOverride(tiny_net, offset=torch.zeros(3)))
    assert got["cross_view/err"] == 0.0 and got["cross_view/drift"] == 0.0
    assert got["cross_view/R2"] == pytest.approx(1.0)
    assert got["cross_view/acc@0.05"] == got["cross_view/acc@0.1"] == 1.0
    assert got["cross_view/turned"] == 0.0
    got, _ = _run(_HeadOverride(tiny_net, offset=torch.tensor([0.0, 0.08, 0.0])))
    assert got["cross_view/err"] == pytest.approx(0.08)
    assert got["cross_view/acc@0.05"] == 0.0 and got["cross_view/acc@0.1"] == 1.0
    assert got["cross_view/R2_x"] == pytest.approx(1.0) and got["cross_view/R2_y"] < 1.0


def test_a_constant_head_at_the_centroid_scores_zero_and_the_real_head_is_read(tiny_net):
    xyz_centroid = torch.tensor([0.025, 0.025, 0.05])
    got, xyz = _run(_HeadOverride(tiny_net, constant=xyz_centroid))
    assert torch.allclose(xyz.mean(0), xyz_centroid)
    assert got["cross_view/R2"] == pytest.approx(0.0, abs=1e-6)
    assert got["cross_view/drift"] == 0.0
    # The untouched net: its own (random) head is what is measured, so the values are not the above.
    got, _ = _run(tiny_net)
    assert got["cross_view/err"] > 0 and got["cross_view/R2"] != pytest.approx(0.0, abs=1e-6)


def test_turned_share_by_hand_and_a_head_that_reads_front_for_back_is_always_turned(tiny_net):
    truth = torch.tensor([[0.4, 0.1, 0.0], [-0.4, -0.1, 0.2]])
    assert turned_share(truth, truth) == 0.0
    assert turned_share(torch.tensor([[-0.4, -0.1, 0.0], [0.4, 0.1, 0.2]]), truth) == 1.0
    # Nearer the turned truth than the truth, though neither exactly: still turned.
    assert turned_share(torch.tensor([[-0.3, 0.0, 0.0], [0.3, 0.0, 0.2]]), truth) == 1.0
    got, _ = _run(_HeadOverride(tiny_net, turned=True))
    assert got["cross_view/turned"] == 1.0
    assert got["cross_view/R2_z"] == pytest.approx(1.0) and got["cross_view/R2_x"] < 0
