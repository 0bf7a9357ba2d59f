"""Safe loading: no file we read can run code unless the user says they trust it.

* Every ``torch.load`` in the package is ``weights_only`` (or gated by an explicit trust flag), every
  ``np.load`` refuses pickles, and nothing calls ``pickle``/``eval`` on file contents.
* Our checkpoints (a real ``fit`` checkpoint: weights, Adam state, loop and callback states, hyper-
  parameters) load with ``weights_only=True``.
* A checkpoint or teacher ``.pth`` that pickles an arbitrary object is refused in one line naming the file;
  only the trust flag (``--weights_only=false``, ``trust_checkpoint``) lets it through.
* Entry-point plugins come from installed distributions only, and a broken one never breaks the CLI.
"""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import lightning as L
import pytest
import torch

from featurenerf.cli import main
from featurenerf.module import FeatureNeRF

REPO = Path(__file__).resolve().parents[1]
SOURCES = [*(REPO / "src").rglob("*.py"), *(REPO / "teachers").rglob("*.py"), *(REPO / "tasks").rglob("*.py")]
TINY = dict(encoder_layers=2, d_hidden=16, n_coarse=8, n_fine=2, n_fine_depth=2, feature_dim=0)


class Planted:
    """Unpickling this creates ``path``: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---------------------------------------------------------------------------------------------- source
def _kwarg(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _unsafe_reads(path: Path, root: Path = REPO) -> list[str]:
    """Calls in one file that could unpickle (or evaluate) file contents without an explicit trust flag."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{path.relative_to(root)}:{node.lineno} {name}"
        if name == "torch.load":
            flag = _kwarg(node, "weights_only")
            safe = isinstance(flag, ast.Constant) and flag.value is True
            # `weights_only=not trust_checkpoint`: unpickling only behind a flag named for trust
            gated = (
                isinstance(flag, ast.UnaryOp)
                and isinstance(flag.op, ast.Not)
                and "trust" in ast.unparse(flag.operand)
            )
            if not (safe or gated):
                found.append(where)
        elif name in ("np.load", "numpy.load"):
            flag = _kwarg(node, "allow_pickle")
            if not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(where)
        elif name in (
            "pickle.load",
            "pickle.loads",
            "torch.jit.load",
            "joblib.load",
            "dill.load",
            "eval",
            "exec",
        ) or name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append(where)
        else:
            remote = _kwarg(node, "trust_remote_code")
            if remote is not None and not (isinstance(remote, ast.Constant) and remote.value is False):
                found.append(f"{where} trust_remote_code")
    return found


def test_source_never_unpickles_untrusted_files():
    assert len(SOURCES) > 30  # the scan sees the package
    unsafe = [hit for path in SOURCES for hit in _unsafe_reads(path)]
    assert unsafe == []


def test_the_scan_catches_unsafe_reads(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "torch.load(p)\ntorch.load(p, weights_only=False)\nnp.load(p)\npickle.loads(b)\n"
        "torch.load(p, weights_only=not trust)\nnp.load(p, allow_pickle=False)\n"
        "AutoModel.from_pretrained(p, trust_remote_code=True)\n"
    )
    hits = [h.split(" ", 1)[1] for h in _unsafe_reads(bad, tmp_path)]
    assert hits == [
        "torch.load",
        "torch.load",
        "np.load",
        "pickle.loads",
        "AutoModel.from_pretrained trust_remote_code",
    ]


# -------------------------------------------------------------------------------------- our checkpoints
def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


@pytest.fixture(scope="module")
def fit_checkpoint(toy_root, tmp_path_factory) -> Path:
    """A checkpoint written by a real one-step fit through our checkpoint IO."""
    from featurenerf.checkpoint_io import AtomicCheckpointIO
    from featurenerf.data.datamodule import FeatureNeRFData

    out = tmp_path_factory.mktemp("fit")
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
        plugins=[AtomicCheckpointIO()],
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=out, save_last=True)],
    )
    data = FeatureNeRFData(
        root=str(toy_root),
        image_size=32,
        teacher=None,
        rays_per_object=8,
        batch_size=2,
        epoch_length=2,
        check=False,
    )
    trainer.fit(FeatureNeRF(**TINY), datamodule=data)
    return out / "last.ckpt"


def test_fit_checkpoint_loads_weights_only_with_plain_hyper_parameters(fit_checkpoint):
    ckpt = torch.load(fit_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 1
    assert {"state_dict", "optimizer_states", "loops", "callbacks", "hyper_parameters"} <= ckpt.keys()
    assert _plain(ckpt["hyper_parameters"]) and ckpt["hyper_parameters"]["feature_dim"] == 0
    model = FeatureNeRF.load_from_checkpoint(fit_checkpoint, map_location="cpu", weights_only=True)
    assert torch.equal(model.net.mlp.lin_in.weight, ckpt["state_dict"]["net.mlp.lin_in.weight"])


def _validate_args(root: Path, ckpt: Path, runs: Path, *extra: str) -> list[str]:
    return [
        "validate",
        f"--ckpt_path={ckpt}",
        f"--data.root={root}",
        "--data.teacher=null",
        "--data.image_size=32",
        "--data.val_objects=1",
        "--data.val_views=1",
        "--data.num_workers=0",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={runs}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


def test_checkpoint_with_a_pickled_object_is_refused_unless_trusted(
    fit_checkpoint, toy_root, tmp_path, capfd
):
    marker = tmp_path / "code_ran"
    ckpt = torch.load(fit_checkpoint, map_location="cpu", weights_only=True)
    ckpt["extra"] = Planted(marker)
    evil = tmp_path / "planted.ckpt"
    torch.save(ckpt, evil)

    capfd.readouterr()
    assert main(_validate_args(toy_root, evil, tmp_path / "runs")) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"featurenerf: error: {evil}: refusing to unpickle")
    assert "GLOBAL" in err[0] and err[0].endswith("if you trust the file, pass --weights_only=false")
    assert not marker.exists()

    # The explicit trust flag is the only way in: then the file is unpickled (and its code runs).
    assert main(_validate_args(toy_root, evil, tmp_path / "runs", "--weights_only=false")) == 0
    assert marker.exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a checkpoint (not a file torch.save writes)"),
        (random.Random(0).randbytes(4096), "not a checkpoint (not a file torch.save writes)"),
        (b"PK\x03\x04 truncated zip", "not a readable checkpoint"),
    ],
)
def test_damaged_checkpoint_is_one_line(content, reason, toy_root, tmp_path, capfd):
    bad = tmp_path / "damaged.ckpt"
    bad.write_bytes(content)
    capfd.readouterr()
    assert main(_validate_args(toy_root, bad, tmp_path / "runs")) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"featurenerf: error: {bad}: {reason}")
    assert "unpickle" not in err[0] and "trust" not in err[0]  # nothing to trust in a non-checkpoint


def test_teacher_pth_with_a_pickled_object_is_refused_unless_trusted(toy_root, tmp_path, capfd):
    marker = tmp_path / "code_ran"
    pth = tmp_path / "dino.pth"
    torch.save({"teacher": {"cls_token": torch.zeros(1, 1, 24)}, "args": Planted(marker)}, pth)
    teacher = {"name": "dino_vits8", "weights": str(pth)}
    args = [
        "fit",
        f"--data.root={toy_root}",
        f"--data.teacher={json.dumps(teacher)}",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
    capfd.readouterr()
    assert main(args) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith(f"featurenerf: error: {pth}: the checkpoint holds pickled Python objects")
    assert err[-1].endswith("pass trust_checkpoint=True")
    assert "Traceback" not in "\n".join(err) and not marker.exists()

    args[2] = f"--data.teacher={json.dumps({**teacher, 'trust_checkpoint': True})}"
    assert main(args) == 2  # unpickled now (code ran), then refused: no ViT weights in it
    assert marker.exists()
    assert "featurenerf: error:" in capfd.readouterr().err


# --------------------------------------------------------------------------------------------- plugins
@dataclass
class FakeEntryPoint:
    name: str
    value: str
    loader: object

    def load(self):
        return self.loader()


@pytest.fixture
def teacher_registry(monkeypatch):
    """The global teacher registry, restored after the test (plugins may register names)."""
    from featurenerf.teachers import TEACHERS

    monkeypatch.setattr(TEACHERS, "_entries", dict(TEACHERS._entries))
    monkeypatch.setattr(TEACHERS, "_plugins_loaded", False)
    monkeypatch.setattr(TEACHERS, "plugin_errors", {})
    return TEACHERS


def test_broken_plugins_are_one_line_each_and_the_cli_still_works(teacher_registry, monkeypatch, capsys):
    from featurenerf.teachers import Teacher

    def good():
        @teacher_registry.register("plugged_teacher")
        class Plugged(Teacher):
            pass

        return Plugged

    def missing_dependency():
        raise ImportError("No module named 'not_installed_dep'")

    def crashes():
        raise RuntimeError("plugin bug\nwith a second line")

    def clashes():  # takes a built-in's name: refused by the registry, skipped
        @teacher_registry.register("hed_vgg16")
        class Impostor(Teacher):
            pass

    eps = {
        "featurenerf.teachers": [
            FakeEntryPoint("needs_dep", "pkg_a:T", missing_dependency),
            FakeEntryPoint("crashes", "pkg_b:T", crashes),
            FakeEntryPoint("impostor", "pkg_c:T", clashes),
            FakeEntryPoint("plugged_teacher", "pkg_d:Plugged", good),
        ]
    }
    calls = []

    def entry_points(*, group):
        calls.append(group)
        return eps.get(group, [])

    # importlib.metadata's entry points (installed distributions' metadata) are the only source
    monkeypatch.setattr(metadata, "entry_points", entry_points)
    assert main(["teachers", "list"]) == 0
    out, err = capsys.readouterr()
    assert calls == ["featurenerf.teachers"]
    err_lines = err.strip().splitlines()
    assert len(err_lines) == 3
    assert all(line.startswith("featurenerf: skipped teacher plugin") for line in err_lines)
    assert "not_installed_dep" in err_lines[0] and "plugin bug" in err_lines[1] and "second" not in err
    assert "already registered" in err_lines[2]
    assert "plugged_teacher" in out and "hed_vgg16" in out
    assert teacher_registry.get("hed_vgg16").__name__ == "HedVGG16Teacher"  # the impostor did not win

    # the training command still parses and helps with the broken plugins around
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    assert "--data.teacher" in capsys.readouterr().out
