"""Exact resume and crash-safe checkpoints.

* ``fit`` for N steps straight and ``fit`` SIGKILLed right after its checkpoint at N/2, then
  ``fit --ckpt_path last`` to N, end with identical weights, optimiser state and counters (CPU, seed 0).
  The kill lands mid-epoch, so the data order must continue exactly where it stopped.
* A checkpoint writer killed mid-write never leaves a ``last.ckpt`` that fails to load.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from featurenerf.checkpoint_io import AtomicCheckpointIO
from featurenerf.checkpointing import load_checkpoint_file
from featurenerf.cli import main
from featurenerf.data.datasets import DrawSampler

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# Every step is checkpointed (top-k -1 keeps each one) so the two runs can be compared step by step.
CKPT_EVERY_STEP = [
    "--trainer.callbacks+=ModelCheckpoint",
    "--trainer.callbacks.every_n_train_steps=1",
    "--trainer.callbacks.save_top_k=-1",
]


def fit_args(root: Path, runs: Path, *extra: str, every_step: bool = True) -> list[str]:
    """A tiny model on the toy set: 4 draws per epoch, 2 per batch, so 2 steps per epoch.

    ``every_step``: add a checkpoint per step (else the config's own checkpointing only)."""
    return [
        "fit",
        "--config",
        str(REPO / "configs" / "toy_cars.yaml"),
        f"--data.root={root}",
        "--data.teacher=null",
        "--data.image_size=32",
        "--data.rays_per_object=16",
        "--data.batch_size=2",
        "--data.epoch_length=4",
        "--data.num_workers=0",
        "--trainer.logger=false",
        "--trainer.max_time=null",
        "--trainer.max_steps=6",
        f"--trainer.default_root_dir={runs}",
        "--trainer.enable_progress_bar=false",
        "--model.encoder_layers=2",
        "--model.d_hidden=16",
        "--model.n_coarse=8",
        "--model.n_fine=2",
        "--model.n_fine_depth=2",
        "--model.bbox_steps=4",  # the switch from box rays to full-image rays falls after the resume
        *(CKPT_EVERY_STEP if every_step else []),
        *extra,
    ]


def _step_checkpoints(run: Path) -> dict[int, Path]:
    return {int(p.stem.rsplit("step=", 1)[1]): p for p in (run / "checkpoints").glob("epoch=*-step=*.ckpt")}


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_draw_sampler_walks_one_stream_across_epochs_and_resumes_mid_epoch():
    consumed = {"n": 0}
    sampler = DrawSampler(4, lambda: consumed["n"])
    assert len(sampler) == 4
    assert list(sampler) == [0, 1, 2, 3]
    consumed["n"] = 4  # the next epoch draws new items, not the same four again
    assert list(sampler) == [4, 5, 6, 7]
    consumed["n"] = 6  # resumed after one batch of two in that epoch: exactly the rest of it
    assert list(sampler) == [6, 7]
    with pytest.raises(ValueError, match="positive multiple"):
        DrawSampler(0, lambda: 0)


def test_draw_sampler_shares_one_stream_between_processes():
    # 2 processes, 8 draws per epoch; after 1 global step of 2 x 2 draws, the rest of the epoch
    ranks = [DrawSampler(8, lambda: 4, rank=r, world_size=2) for r in (0, 1)]
    assert [len(s) for s in ranks] == [4, 4]  # per process, a full epoch
    assert [list(s) for s in ranks] == [[4, 6], [5, 7]]
    with pytest.raises(ValueError, match="multiple of 2"):
        DrawSampler(7, lambda: 0, world_size=2)


@pytest.mark.parametrize(
    "teacher",
    [
        "null",
        # with distillation targets from the cached teacher maps too (cache filled once, shared)
        pytest.param("hed_vgg16", marks=pytest.mark.slow),
    ],
)
def test_killed_then_resumed_run_matches_the_straight_run_exactly(toy_root, tmp_path, teacher):
    common = [f"--data.teacher={teacher}", f"--data.cache_dir={tmp_path / 'cache'}"]
    # N = 6 steps straight.
    straight_runs = tmp_path / "straight"
    assert main(fit_args(toy_root, straight_runs, "--run_name=s", *common)) == 0
    straight = straight_runs / "s"

    # The same run in a child process, SIGKILLed right after its checkpoint at step 3 (mid-epoch 1).
    runs = tmp_path / "killed"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from featurenerf.cli import main; sys.exit(main(sys.argv[1:]))",
            *fit_args(toy_root, runs, "--run_name=k", *common),
            "--trainer.callbacks+=resume_support.KillAtStep",
            "--trainer.callbacks.step=3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    killed = runs / "k"
    assert sorted(_step_checkpoints(killed)) == [1, 2, 3]
    assert _load(killed / "checkpoints" / "last.ckpt")["global_step"] == 3

    # Resume the latest run under the runs folder, in place, to N.
    assert main(fit_args(toy_root, runs, "--ckpt_path=last", *common)) == 0
    assert sorted(_step_checkpoints(killed)) == [1, 2, 3, 4, 5, 6]

    # Identical at every step after the resume, not only at the end.
    ours, theirs = _step_checkpoints(killed), _step_checkpoints(straight)
    for step in (4, 5, 6):
        a, b = _load(ours[step]), _load(theirs[step])
        assert (a["global_step"], a["epoch"]) == (b["global_step"], b["epoch"]) == (step, (step - 1) // 2)
        _assert_same_tensors(a["state_dict"], b["state_dict"], f"step {step} state_dict")
        _assert_same_tensors(a["optimizer_states"], b["optimizer_states"], f"step {step} Adam state")
        assert a["skip_window"] == b["skip_window"]
    final_a, final_b = (
        _load(killed / "checkpoints" / "last.ckpt"),
        _load(straight / "checkpoints" / "last.ckpt"),
    )
    _assert_same_tensors(final_a["state_dict"], final_b["state_dict"], "final state_dict")
    assert int(final_a["state_dict"]["seen_steps"]) == 6
    # The weights did move after the resume (a resume that trained nothing would also "match" step 3).
    w3 = _load(ours[3])["state_dict"]["net.mlp.lin_in.weight"]
    assert not torch.equal(w3, final_a["state_dict"]["net.mlp.lin_in.weight"])
    # only complete checkpoints in the folder: no temporaries of interrupted or finished writes
    assert not [p for p in (killed / "checkpoints").iterdir() if p.name.startswith(".")]


def test_cli_trainer_writes_checkpoints_atomically(tmp_path):
    from featurenerf.data.datamodule import FeatureNeRFData
    from featurenerf.lightning_cli import FeatureNeRFCLI
    from featurenerf.module import FeatureNeRF

    cli = FeatureNeRFCLI(
        FeatureNeRF,
        FeatureNeRFData,
        args=["--data.teacher=null", f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"],
        run=False,
        save_config_callback=None,
    )
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO


def test_a_run_resumed_in_another_folder_overwrites_its_last_ckpt(toy_root, tmp_path):
    """A copied run resumed with --ckpt_path its last.ckpt keeps one last.ckpt (no last-v1.ckpt), holding
    the new step: validate reads last.ckpt."""
    import shutil

    def fit(runs: Path, steps: int, *extra: str) -> None:
        argv = fit_args(
            toy_root, runs, f"--trainer.max_steps={steps}", "--trainer.limit_val_batches=0", "--run_name=r",
            "--trainer.precision=32-true", *extra, every_step=False,
        )  # fmt: skip
        assert main(argv) == 0

    fit(tmp_path / "a", 2)
    shutil.copytree(tmp_path / "a" / "r", tmp_path / "b" / "r")
    fit(tmp_path / "b", 3, "--ckpt_path", str(tmp_path / "b" / "r" / "checkpoints" / "last.ckpt"))
    saved = sorted(p.name for p in (tmp_path / "b" / "r" / "checkpoints").iterdir())
    assert [n for n in saved if n.startswith("last")] == ["last.ckpt"]
    assert _load(tmp_path / "b" / "r" / "checkpoints" / "last.ckpt")["global_step"] == 3


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, target)

    def half_then_fail(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, target)
    monkeypatch.undo()
    loaded = io.load_checkpoint(target)
    assert loaded["global_step"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temporary left behind


_WRITER = """
import sys, torch
from featurenerf.checkpoint_io import AtomicCheckpointIO
io, target, i = AtomicCheckpointIO(), sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
while True:  # 16 MB checkpoints, back to back: a kill at a random instant lands mid-write
    io.save_checkpoint({"global_step": i, "w": torch.full((4_000_000,), float(i))}, target)
    i += 1
"""


def test_sigkill_during_checkpoint_writes_never_leaves_a_corrupt_last_ckpt(tmp_path):
    target = tmp_path / "last.ckpt"
    rng = torch.Generator().manual_seed(0)
    start, interrupted = 0, 0
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target), str(start)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2 + 0.4 * float(torch.rand((), generator=rng)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        # a temporary left behind means the kill interrupted a write; none of them is the target
        leftovers = [p for p in tmp_path.iterdir() if p.name != "last.ckpt"]
        assert all(p.name.startswith(".last.ckpt.") and p.name.endswith(".tmp") for p in leftovers)
        interrupted += bool(leftovers)
        if target.exists():  # old or new, never partial: it loads and is self-consistent
            ckpt = load_checkpoint_file(target)
            assert torch.equal(ckpt["w"], torch.full((4_000_000,), float(ckpt["global_step"])))
            start = ckpt["global_step"] + 1
    assert target.exists(), "the writer never completed a checkpoint; the test did not exercise anything"
    assert interrupted > 0, "no kill landed mid-write; the test did not exercise anything"
    # the next complete save clears the dead writers' temporaries
    AtomicCheckpointIO().save_checkpoint({"global_step": start}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# ------------------------------------------------------------------------------------ every writer
#: Writes that may be plain: (file, function) -> why.
PLAIN_WRITES_ALLOWED = {
    # each object is written into a staging folder that is renamed into place when complete
    ("src/featurenerf/data/synth/generate.py", "render_object"): "staging folder",
    ("src/featurenerf/data/synth/generate.py", "_write_png"): "staging folder",
    ("src/featurenerf/data/synth/generate.py", "_write_npz"): "staging folder",
    # a child process's log, appended to while the job runs (a log, not a result: partial is honest)
    ("src/featurenerf/results/runner.py", "_loop"): "job log stream",
}
_WRITE_METHODS = {"write_text", "write_bytes", "save", "savez", "savez_compressed", "save_file", "to_csv"}
_WRITE_FUNCTIONS = {
    "torch.save",
    "json.dump",
    "yaml.dump",
    "yaml.safe_dump",
    "pickle.dump",
    "shutil.copy",
    "shutil.copy2",
    "shutil.copyfile",
    "shutil.copytree",
    "shutil.move",
}


def _name(func) -> str:
    import ast

    if isinstance(func, ast.Attribute):
        inner = _name(func.value)
        return f"{inner}.{func.attr}" if inner else func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _is_write(call) -> bool:
    import ast

    name = _name(call.func)
    last = name.rsplit(".", 1)[-1]
    if name in _WRITE_FUNCTIONS:
        return name not in ("yaml.dump", "yaml.safe_dump") or len(call.args) > 1  # dump to a stream
    if last in _WRITE_METHODS and name not in ("torch.load",):
        return True
    if last in ("open", "File", "ZipFile"):
        mode = (
            call.args[1]
            if len(call.args) > 1
            else next((k.value for k in call.keywords if k.arg == "mode"), None)
        )
        return isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
    return False


def _plain_writes(path: Path) -> list[tuple[str, str, int]]:
    """(file, enclosing function, line) of each write not inside ``atomic_*(...)``/``with atomic_*``."""
    import ast

    tree = ast.parse(path.read_text())
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _is_write(node)):
            continue
        up, atomic, function = node, False, None
        while up in parent:
            up = parent[up]
            calls = [up] if isinstance(up, ast.Call) else []
            if isinstance(up, ast.With):
                calls = [item.context_expr for item in up.items if isinstance(item.context_expr, ast.Call)]
            atomic |= any(_name(c.func).rsplit(".", 1)[-1].startswith("atomic_") for c in calls)
            if function is None and isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef)):
                function = up.name
        if not atomic:
            found.append((str(path.relative_to(REPO)), function, node.lineno))
    return found


def test_every_file_we_write_goes_through_an_atomic_writer():
    sources = [p for d in ("src", "teachers", "tasks") for p in (REPO / d).rglob("*.py")]
    sources = [p for p in sources if p.name != "io.py" or p.parent.name != "featurenerf"]
    plain = [hit for p in sources for hit in _plain_writes(p) if hit[:2] not in PLAIN_WRITES_ALLOWED]
    assert plain == [], "write these with featurenerf.io (atomic_write / atomic_save_via / atomic_write_json)"


def test_the_writer_scan_sees_plain_and_atomic_writes(tmp_path, monkeypatch):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def plain(p, x):\n"
        "    p.write_text('x')\n"
        "    torch.save(x, p)\n"
        "    with open(p, 'w') as f:\n"
        "        json.dump(x, f)\n"
        "def fine(p, x):\n"
        "    atomic_save_via(p, lambda t: torch.save(x, t))\n"
        "    with atomic_write(p, 'w') as f:\n"
        "        json.dump(x, f)\n"
        "    open(p).read()\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert _plain_writes(probe) == [
        ("probe.py", "plain", 2),
        ("probe.py", "plain", 3),
        ("probe.py", "plain", 4),
        ("probe.py", "plain", 5),
    ]


def test_a_fit_without_validation_saves_at_every_epoch_end(toy_root, tmp_path, monkeypatch):
    """With validation off (the results runner's fits) last.ckpt follows the epochs, so a fit killed
    mid-way resumes from its last epoch instead of starting over."""
    from featurenerf.module import FeatureNeRF

    def crash_at_step_3(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("killed at step 3")

    monkeypatch.setattr(FeatureNeRF, "on_train_batch_start", crash_at_step_3, raising=False)
    argv = fit_args(toy_root, tmp_path, "--trainer.limit_val_batches=0", "--run_name=r", every_step=False)
    with pytest.raises(RuntimeError, match="killed at step 3"):
        main(argv)
    ckpt = _load(tmp_path / "r" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2  # the end of the first epoch (2 steps per epoch)
