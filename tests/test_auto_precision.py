"""``trainer.precision: auto``: bf16-mixed on CPUs with bf16 matrix units, fp32 elsewhere, said in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from featurenerf import precision
from featurenerf.precision import auto_precision, cpu_bf16_flags, resolve_precision

REPO = Path(__file__).resolve().parents[1]
AVX2 = (
    "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
)
AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """Point the CPU description at a file with the given text."""

    def use(text: str) -> Path:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(precision, "CPUINFO", path)
        monkeypatch.setattr(precision, "_uses_cuda", lambda accelerator: False)
        return path

    return use


def test_flags_are_read_from_cpuinfo(fake_cpu):
    assert cpu_bf16_flags(fake_cpu(AVX2)) == []
    assert cpu_bf16_flags(fake_cpu(AMX)) == ["amx_bf16", "avx512_bf16"]
    assert cpu_bf16_flags(fake_cpu(AVX512_BF16)) == ["avx512_bf16"]
    assert cpu_bf16_flags(Path("/nonexistent/cpuinfo")) == []  # not Linux: fp32, no error


@pytest.mark.parametrize(
    "text, choice, why",
    [(AVX2, "32-true", "neither amx_bf16 nor avx512_bf16"), (AMX, "bf16-mixed", "amx_bf16 and avx512_bf16"),
     (AVX512_BF16, "bf16-mixed", "avx512_bf16")],
    ids=["avx2", "amx", "avx512_bf16"],
)  # fmt: skip
def test_auto_picks_bf16_only_with_bf16_units(fake_cpu, text, choice, why):
    fake_cpu(text)
    picked, reason = auto_precision("cpu")
    assert picked == choice and why in reason
    value, note = resolve_precision("auto", "cpu")
    assert value == choice and note == f"trainer.precision auto: {choice} ({reason})"
    assert resolve_precision("16-mixed", "cpu") == ("16-mixed", None)  # explicit choices are kept


@pytest.mark.parametrize("text, choice", [(AVX2, "32-true"), (AMX, "bf16-mixed")], ids=["avx2", "amx"])
def test_cli_resolves_auto_before_building_the_trainer(fake_cpu, tmp_path, capsys, text, choice):
    from featurenerf.data.datamodule import FeatureNeRFData
    from featurenerf.lightning_cli import FeatureNeRFCLI
    from featurenerf.module import FeatureNeRF

    fake_cpu(text)
    args = [
        "--config", str(REPO / "configs" / "toy_cars.yaml"), "--data.teacher=null",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", "--trainer.precision", "auto",
    ]  # fmt: skip
    cli = FeatureNeRFCLI(FeatureNeRF, FeatureNeRFData, args=args, run=False, save_config_callback=None)
    assert cli.trainer.precision == choice
    assert f"trainer.precision auto: {choice}" in capsys.readouterr().err


def test_bad_precision_is_still_refused(capsys):
    from featurenerf.cli import main

    assert (
        main(["fit", "--config", str(REPO / "configs" / "toy_cars.yaml"), "--trainer.precision", "bf17"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("featurenerf: error:") and "trainer.precision" in err and "\n" not in err


@pytest.mark.parametrize("name", ["toy_cars.yaml", "toy_chairs.yaml"])
def test_toy_configs_default_to_auto(name):
    assert yaml.safe_load((REPO / "configs" / name).read_text())["trainer"]["precision"] == "auto"


@pytest.mark.parametrize("flag", [[], ["--tf32", "false"], ["--tf32", "true"]], ids=["default", "off", "on"])
def test_tf32_option_sets_the_matmul_precision_only_when_on(tmp_path, capsys, flag):
    import torch

    from featurenerf.data.datamodule import FeatureNeRFData
    from featurenerf.lightning_cli import FeatureNeRFCLI
    from featurenerf.module import FeatureNeRF

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        args = [
            "--config", str(REPO / "configs" / "toy_cars.yaml"), "--data.teacher=null",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false", *flag,
        ]  # fmt: skip
        cli = FeatureNeRFCLI(FeatureNeRF, FeatureNeRFData, args=args, run=False, save_config_callback=None)
        on = flag == ["--tf32", "true"]
        assert cli.config.tf32 is on
        assert torch.get_float32_matmul_precision() == ("high" if on else "highest")
        assert torch.backends.cuda.matmul.allow_tf32 is on
        assert ("tf32: fp32 matrix products may use TensorFloat-32" in capsys.readouterr().err) is on
    finally:
        torch.set_float32_matmul_precision(before)
