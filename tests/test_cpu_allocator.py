"""featurenerf.cpu_allocator: freed activation-sized blocks are reused, not faulted in again every step."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

import featurenerf.module as module_mod

# A step's worth of activation-sized temporaries (64 MB each, the size of one (32768, 512) fp32
# activation), repeated. glibc serves blocks that large with fresh mmaps: every round faults in (and
# zeroes) each 4 kB page again. With freed memory kept, the heap settles after a few rounds (small
# allocations landing in freed blocks leave holes until it does) and later rounds fault nothing.
PROBE = textwrap.dedent(
    """
    import resource, torch
    from featurenerf.cpu_allocator import keep_freed_memory
    applied = keep_freed_memory()
    x = torch.ones(16 << 20)
    def step():
        y = x * 2.0
        return float(torch.relu(y)[0])
    for _ in range(20):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _run(code: str, **env: str) -> str:
    """Stdout of ``code`` in a fresh interpreter (the allocator settings are process-wide)."""
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1", **env}, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip


def _faults(env_value: str) -> tuple[bool, int]:
    applied, faults = _run(PROBE, FEATURENERF_KEEP_FREED_MEMORY=env_value).split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_blocks_are_reused_without_page_faults():
    applied, kept = _faults("1")
    skipped, default = _faults("0")
    assert applied and not skipped
    # 5 rounds x 2 temporaries x 16k pages with glibc's defaults; (next to) none once memory is kept.
    assert default > 5 * 2 * 10_000
    assert kept < default / 50


def _recorder(monkeypatch) -> list[int]:
    """Calls of keep_freed_memory, wherever it is looked up (the allocator module or the CLI's import)."""
    import featurenerf.cpu_allocator as allocator
    import featurenerf.lightning_cli as lightning_cli

    calls: list[int] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(lightning_cli, "keep_freed_memory", lambda: calls.append(1) or True)
    return calls


def _trainer_on(device: str) -> SimpleNamespace:
    return SimpleNamespace(strategy=SimpleNamespace(root_device=SimpleNamespace(type=device)))


def test_the_cli_callback_turns_it_on_for_cpu_runs_only(monkeypatch):
    from featurenerf.lightning_cli import KeepFreedMemory

    calls = _recorder(monkeypatch)
    for device, expected in (("cuda", 0), ("cpu", 1)):
        KeepFreedMemory().setup(_trainer_on(device), None, "fit")
        assert len(calls) == expected


def test_the_module_leaves_the_allocator_alone(monkeypatch):
    calls = _recorder(monkeypatch)
    model = module_mod.FeatureNeRF(feature_dim=4, d_hidden=16, encoder_layers=1, n_coarse=4, n_fine=2)
    monkeypatch.setattr(type(model), "trainer", property(lambda self: _trainer_on("cpu")))
    model.setup("fit")
    assert calls == [] and not hasattr(module_mod, "keep_freed_memory")


def test_featurenerf_fit_turns_it_on(monkeypatch, toy_root, tmp_path):
    from test_cli import tiny_fit_args

    from featurenerf.cli import main

    calls = _recorder(monkeypatch)
    assert main(tiny_fit_args(toy_root, tmp_path / "runs", "--trainer.max_steps=1")) == 0
    assert calls == [1]  # one process, one CPU trainer


def test_release_free_memory_hands_kept_pages_back():
    probe = textwrap.dedent(
        """
        import torch
        from featurenerf.cpu_allocator import keep_freed_memory, release_free_memory
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096
        keep_freed_memory()
        x = torch.ones(64 << 20)  # 256 MB, then freed: kept in the heap
        del x
        kept = rss()
        release_free_memory()
        print(kept - rss())
        """
    )
    assert int(_run(probe)) > 200 << 20
