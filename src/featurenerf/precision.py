"""``trainer.precision: auto``: bf16-mixed where the hardware has bf16 matrix units, fp32 elsewhere.

On CPUs, bf16 only pays where the cores multiply bf16 natively: Intel AMX (``amx_bf16``) or AVX-512
BF16 (``avx512_bf16``). One build machine with AMX measured bf16 GEMMs at 1.33 TFLOP/s against 0.26 for
fp32 and a bf16-mixed training step at 0.39x the fp32 one; on an AVX2-only CPU bf16 is emulated and
slower than fp32. On CUDA, bf16-mixed wherever the GPU supports bf16 (Ampere and later).
Lightning does not know "auto"; the CLI resolves it with :func:`resolve_precision` before the Trainer is
built, and says which it chose.

``--tf32 true`` (off by default) lets fp32 matrix products on CUDA run in TensorFloat-32 (:func:`use_tf32`): about 10 mantissa bits instead of 23 on Ampere and later GPUs, for a faster fp32 step.
"""

from __future__ import annotations

from pathlib import Path

#: CPU flags (as /proc/cpuinfo spells them) that mean native bf16 matrix arithmetic.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
#: Where the CPU flags are read from (Linux); tests point it at a fake file.
CPUINFO = Path("/proc/cpuinfo")


def cpu_bf16_flags(cpuinfo: Path | None = None) -> list[str]:
    """The bf16 flags of :data:`BF16_CPU_FLAGS` that the CPU reports (empty where the file is missing,
    e.g. not on Linux: fp32 is the safe choice)."""
    path = CPUINFO if cpuinfo is None else cpuinfo
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [f for f in BF16_CPU_FLAGS if f in flags]


def _uses_cuda(accelerator: object) -> bool:
    """Whether Lightning will train on a CUDA GPU with this ``trainer.accelerator``."""
    import torch

    name = str(accelerator).lower() if accelerator is not None else "auto"
    return name in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def auto_precision(accelerator: object = "auto", cpuinfo: Path | None = None) -> tuple[str, str]:
    """The precision "auto" stands for on this machine, and why.

    Args:
        accelerator: ``trainer.accelerator`` (a name or an Accelerator instance; only CUDA is special).
        cpuinfo: the CPU description to read (default :data:`CPUINFO`).
    Returns:
        ``("bf16-mixed" | "32-true", reason)``.
    """
    if _uses_cuda(accelerator):
        import torch

        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"GPU {name} supports bf16"
        return "32-true", f"GPU {name} has no bf16"
    flags = cpu_bf16_flags(cpuinfo)
    if flags:
        return "bf16-mixed", f"CPU reports {' and '.join(flags)}"
    return "32-true", f"CPU reports neither {' nor '.join(BF16_CPU_FLAGS)}"


def resolve_precision(precision: object, accelerator: object = "auto") -> tuple[object, str | None]:
    """``precision`` unchanged, or what "auto" stands for with a one-line note saying so."""
    if precision != "auto":
        return precision, None
    choice, reason = auto_precision(accelerator)
    return choice, f"trainer.precision auto: {choice} ({reason})"


def use_tf32(enabled: bool) -> str | None:
    """Let fp32 matrix products on CUDA run in TF32 when ``enabled``
    (``torch.set_float32_matmul_precision("high")``, which sets ``torch.backends.cuda.matmul.allow_tf32``)
    and return a one-line note saying so; leave torch's settings as they are otherwise (fp32 matmuls)."""
    if not enabled:
        return None
    import torch

    torch.set_float32_matmul_precision("high")
    return "tf32: fp32 matrix products may use TensorFloat-32 on CUDA (float32 matmul precision high)"
