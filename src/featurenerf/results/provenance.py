"""What the study's runs were made with, read back from their own records for the report's budget lines.

Each function reads what a run left on disk (``synth.json``, a fit's saved ``config.yaml``, an
evaluation's ``results.json``), not the options the study was invoked with: a report rewritten later, or
one whose runs were reused from an earlier invocation, then still says what its figures came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from featurenerf.data.synth.generate import options_of
from featurenerf.data.synth.shapes import shape_styles

from .plan import Job

#: The loss settings a fit's ``config.yaml`` records under ``model`` and the report names.
LOSS_KEYS = ("rgb_weight", "distill_weight", "coord_weight", "coord_loss")
#: The learning rates it records there (``encoder_lr``: ``None`` or absent means the encoder trains at ``lr``).
RATE_KEYS = ("lr", "encoder_lr")


def data_versions(jobs: list[Job]) -> dict[str, str | None]:
    """Category → how its data was made, from ``synth.json``: ``data synth`` version, its size (objects ×
    views × px, seed: the data found may predate the study's own settings), plus the options that change
    the data when not the default (``style``, per-object training cameras); None when the data was not
    made by ``data synth`` or the record is unreadable. Figures of toy data made differently are not
    comparable."""
    out: dict[str, str | None] = {}
    for job in jobs:
        if job.kind != "prepare" or "--root" not in job.argv:
            continue
        record = Path(job.argv[job.argv.index("--root") + 1]) / "synth.json"
        try:
            made = json.loads(record.read_text())
            text = (
                f"version {int(made['version'])}, {int(made['objects'])} objects × {int(made['views'])} views "
                f"× {int(made['size'])} px, seed {int(made['seed'])}"
            )
            default_style = shape_styles(made["category"])[0]
        except (OSError, ValueError, KeyError, TypeError):
            out[job.category] = None
            continue
        # The options as data synth reads its own record, named only where they are not the default.
        options = options_of(made) or {}
        if options.get("style") not in (None, default_style):
            text += f", --style {options['style']}"
        if options.get("train_cameras") == "per_object":
            text += ", --train-cameras per_object"
        out[job.category] = text
    return out


def render_precisions(jobs: list[Job]) -> dict[str, int]:
    """How many finished evaluations rendered their fields in each precision (``32``, ``bf16``;
    ``unrecorded`` for results written before ``--tasks.render_precision`` existed: float32)."""
    counts: dict[str, int] = {}
    for job in jobs:
        path = job.run_dir / "tasks" / "results.json"
        if job.kind != "eval" or not path.exists():
            continue
        try:
            protocol = json.loads(path.read_text()).get("protocol", {})
        except (OSError, ValueError):
            continue
        key = str(protocol.get("render_precision", "unrecorded"))
        counts[key] = counts.get(key, 0) + 1
    return counts


def precision_line(counts: dict[str, int]) -> str:
    """The budget line saying how the evaluations rendered their fields (counts of :func:`render_precisions`)."""
    names = {"32": "float32", "bf16": "bf16 autocast", "unrecorded": "float32 (before the option)"}
    parts = [f"{names.get(k, k)} in {n}" for k, n in sorted(counts.items())]
    return (
        f"- evaluation renders: {', '.join(parts)} of {sum(counts.values())} evaluation(s) "
        "(`--tasks.render_precision auto`: bf16 where the device multiplies it natively); labels are "
        "always matched in float32"
    )


def _teacher_name(teacher: object) -> str | None:
    """A config's ``data.teacher`` as a short name: the registry name, or a class path's class."""
    if isinstance(teacher, dict):
        teacher = teacher.get("class_path")
    return teacher.rsplit(".", 1)[-1] if isinstance(teacher, str) else None


def loss_weights(jobs: list[Job]) -> dict[str, list[dict]]:
    """Variant → the distinct loss settings and learning rates its fits were trained with (usually one),
    each ``{rgb_weight, distill_weight, coord_weight, coord_loss, lr, encoder_lr, teacher}`` as the fit's
    saved ``config.yaml`` records them (``encoder_lr`` only when set). Fits without a readable config (not
    run yet) are left out."""
    out: dict[str, list[dict]] = {}
    for job in jobs:
        path = job.run_dir / "config.yaml"
        if job.kind != "fit" or not path.is_file():
            continue
        try:
            config = yaml.safe_load(path.read_text())
            model = config["model"]
            setting = {key: model[key] for key in LOSS_KEYS + RATE_KEYS if model.get(key) is not None}
            setting["teacher"] = _teacher_name((config.get("data") or {}).get("teacher"))
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            continue
        if setting not in out.setdefault(job.variant, []):
            out[job.variant].append(setting)
    return out


def weights_line(weights: dict[str, list[dict]]) -> str:
    """The budget line naming each variant's loss weights and learning rates (e.g. ``featurenerf: rgb 1.0,
    distill 2.0, coord 0.25 (release), lr 0.0005, encoder lr 0.002``)."""

    def one(s: dict) -> str:
        text = ", ".join(f"{k.removesuffix('_weight')} {s[k]}" for k in LOSS_KEYS[:3] if k in s)
        if s.get("coord_weight") and "coord_loss" in s:
            text += f" ({s['coord_loss']})"
        text += "".join(f", {k.replace('_', ' ')} {s[k]}" for k in RATE_KEYS if k in s)
        return text + (f", teacher {s['teacher']}" if s.get("teacher") else "")

    parts = [f"{variant}: {' | '.join(one(s) for s in settings)}" for variant, settings in weights.items()]
    return f"- loss weights and learning rates (each fit's saved `config.yaml`): {'; '.join(parts)}"
