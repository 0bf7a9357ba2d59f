"""The task suite: the selected tasks as Lightning validation loops, and their results table.

``featurenerf validate --config CFG --ckpt_path CKPT --task part_seg keypoints novel_view`` builds a
:class:`TaskSuite`; each task becomes one validation dataloader (indices 1..N after the novel-view loader
0), :meth:`TaskSuite.validation_step` dispatches a batch to its task by ``dataloader_idx``, and
:meth:`TaskSuite.on_validation_epoch_end` reduces the metrics over ranks, logs them, and writes
``results.json`` / ``results.md`` (plus ``pairs.json`` and ``pictures/``) into ``out_dir``. Because the
tasks are ordinary validation loops they also run under DDP and periodically during ``fit``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import DataLoader

from featurenerf.data.srn import ObjectRecord
from featurenerf.errors import ConfigError, DataError
from featurenerf.io import atomic_write, atomic_write_json
from featurenerf.ranges import NonNegativeFloat, NonNegativeInt, PositiveInt

from .base import TASKS, Task, TaskContext
from .data import PairItems, ShardSampler, single_item
from .descriptors import METHODS, Descriptors
from .pair_options import check_pair_options, check_task_pairs, protocol_sentences
from .pairs import (
    DEFAULT_BASELINE_DEG,
    PairSet,
    pair_angles,
    read_pairs_file,
    resolve_cross_instance,
    sample_pairs,
    write_pairs_file,
)
from .precision import RENDER_PRECISIONS, render_dtype
from .shots import draw_extra_sources, normalise_shots
from .tables import results_table
from .viewpoints import PoseCache, summarize_angles


class TaskSuite:
    """Selected tasks evaluated on fixed pairs of one split, every method in one table.

    Not an ``nn.Module`` on purpose: set as ``module.tasks`` it must not add the pixelNeRF baseline or
    metric states to the evaluated model's checkpoint.

    Args:
        tasks: task names (see :func:`featurenerf.tasks.list_tasks`); groups are expanded by the CLI.
        datamodule: the :class:`~featurenerf.data.datamodule.FeatureNeRFData` (objects, background,
            teacher and its feature cache).
        num_pairs: pairs of each kind (paper: 1000); with ``pairs_file``, the first ``num_pairs`` of each.
        task_pairs: pairs of each kind for the tasks named here instead of ``num_pairs`` (e.g.
            ``{part_seg_3d: 400, keypoints_3d: 400}``: the 3D tasks are cheap per pair, so they can afford
            narrower intervals). One draw serves every task: a task takes its first ``n`` pairs, so tasks
            with the same count use the same pairs and a smaller count is a prefix of a larger one.
        pairs_file: pairs in the FeatureNeRF release's format, instead of drawing them.
        split: split the pairs come from.
        seed: seed of the pair draw.
        pixelnerf_ckpt: checkpoint of a model trained with distillation weights 0 (the ``pixelnerf``
            method); skipped when ``None``.
        image_size: side the tasks work at (default: the data's image size).
        out_dir: where results, pairs and pictures go.
        pictures: pairs of each kind per task that get a picture.
        cache_mb: memory budget of the rendered-descriptor cache.
        match_camera: how a cross-instance pair finds the target's camera: ``same`` (view k of both
            objects, refused when it is not the same camera) or ``nearest`` (the target's view nearest
            in viewing direction).
        baseline_min_deg, baseline_max_deg: the angle between the two viewing directions of a drawn
            cross-view pair (default 15-60 degrees: near views); pairs files are taken as they are.
        shots: annotated source objects per cross-instance pair of the part tasks, one count or several
            (``[1, 5]`` reports both side by side; see :mod:`featurenerf.tasks.shots`). 1: the paper's
            one-shot transfer.
        methods: compare only these methods (default ``None``: every available one); a name that is
            not a method is refused.
        per_part: the part tasks also report each part's IoU (``<kind>/IoU/<part>``, one-shot pairs,
            parts named by the data's ``meta.json``), averaged over the pairs whose two objects have it.
        render_precision: what the fields render in: ``32`` (float32), ``bf16`` (bfloat16 autocast) or
            ``auto`` (bf16 where the device multiplies it natively: a bf16 GPU, or a CPU with AMX or
            AVX-512 BF16; float32 elsewhere). Labels are matched in float32 whatever it says. Measured
            effect: :mod:`featurenerf.tasks.precision` and the README.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        datamodule,
        num_pairs: PositiveInt = 1000,
        task_pairs: dict[str, PositiveInt] | None = None,
        pairs_file: str | None = None,
        split: str = "test",
        seed: int = 0,
        pixelnerf_ckpt: str | None = None,
        image_size: PositiveInt | None = None,
        out_dir: str | Path = "outputs/tasks",
        pictures: NonNegativeInt = 2,
        cache_mb: NonNegativeInt = 1024,
        match_camera: Literal["same", "nearest"] = "same",
        baseline_min_deg: NonNegativeFloat = DEFAULT_BASELINE_DEG[0],
        baseline_max_deg: NonNegativeFloat = DEFAULT_BASELINE_DEG[1],
        shots: int | Sequence[int] = 1,
        methods: Sequence[str] | None = None,
        per_part: bool = False,
        render_precision: Literal["auto", "32", "bf16"] = "auto",
    ) -> None:
        names = list(dict.fromkeys(tasks))
        if not names:
            raise ValueError("TaskSuite needs at least one task")
        unknown = [m for m in methods or () if m not in METHODS]
        if unknown:
            raise ConfigError(f"--tasks.methods: unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")
        self.only = None if methods is None else set(methods)
        self.datamodule = datamodule
        self.image_size = int(image_size or datamodule.image_size)
        self.split = split
        self.seed = seed
        self.pairs_file = pairs_file
        self.out_dir = Path(out_dir)
        self.num_pictures = pictures
        self.cache_bytes = int(cache_mb) << 20
        if render_precision not in RENDER_PRECISIONS:
            raise ConfigError(
                f"--tasks.render_precision: expected one of {', '.join(RENDER_PRECISIONS)}, got {render_precision!r}"
            )
        self.render_precision = render_precision
        self.tasks: list[Task] = [TASKS.create(n, methods=METHODS, image_size=self.image_size) for n in names]
        self.shots = normalise_shots(shots)
        for task in self.tasks:
            if task.few_shot:
                task.set_shots(self.shots)
        if per_part:
            self._name_parts()

        records = sorted(datamodule.records(split), key=lambda r: r.name)
        if not records:
            root = getattr(datamodule, "root", None)
            raise DataError(f"{root}: no objects in the {split!r} split to evaluate the tasks on")
        self.match_camera = match_camera
        self.baseline_deg = (float(baseline_min_deg), float(baseline_max_deg))
        check_pair_options(match_camera, *self.baseline_deg)
        poses = PoseCache(records)
        self.num_pairs = int(num_pairs)
        self.task_pairs = check_task_pairs(task_pairs or {}, [t.name for t in self.tasks])
        most = max([self.num_pairs, *self.task_pairs.values()])
        #: The pairs of the task with the most; each task evaluates its first :meth:`pairs_of` of them.
        self.pairs: PairSet = self._make_pairs(records, most, poses)
        self.protocol = self._protocol(poses)
        self.notes: list[str] = []
        self.extra_sources: dict[int, tuple[str, ...]] = {}
        self.records = self._used_records(records)
        self._check_annotations()

        self.teacher_available = getattr(datamodule, "teacher", None) is not None
        if not self.teacher_available:
            self.notes.append("teacher_2d: skipped (no teacher configured, data.teacher is null)")
        self.pixelnerf = load_pixelnerf(pixelnerf_ckpt) if pixelnerf_ckpt else None
        if self.pixelnerf is None:
            self.notes.append("pixelnerf: skipped (no --tasks.pixelnerf_ckpt given)")
        self.methods: list[str] | None = None
        self._ctx: TaskContext | None = None
        self.last_results: dict | None = None

    # ------------------------------------------------------------------ data
    def pairs_of(self, task: str) -> PairSet:
        """The pairs ``task`` evaluates: the first ``task_pairs[task]`` (else ``num_pairs``) of each kind."""
        return self.pairs.head(self.task_pairs.get(task, self.num_pairs))

    def _make_pairs(self, records: list[ObjectRecord], num_pairs: int, poses: PoseCache) -> PairSet:
        """The first ``num_pairs`` pairs of each kind: read from ``pairs_file``, or drawn with ``seed``
        for the kinds the tasks use."""
        if self.pairs_file:
            pairs = resolve_cross_instance(
                read_pairs_file(self.pairs_file, records).head(num_pairs), records, self.match_camera, poses
            )
        else:
            kinds = {k for task in self.tasks for k in task.kinds}
            pairs = sample_pairs(
                records,
                num_pairs,
                self.seed,
                kinds=[k for k in ("cross_inst", "cross_view") if k in kinds],
                match_camera=self.match_camera,
                baseline_deg=self.baseline_deg,
                poses=poses,
            )
        return pairs.head(num_pairs)

    def _used_records(self, records: list[ObjectRecord]) -> list[ObjectRecord]:
        """The split's objects the pairs use, and the extra annotated sources of the few-shot part
        tasks (drawn into ``extra_sources``); notes what the split could not give."""
        used = {p.src for p in self.pairs.cross_inst} | {p.trg for p in self.pairs.cross_inst}
        used |= {p.model_id for p in self.pairs.cross_view}
        if max(self.shots) > 1 and any(t.few_shot for t in self.tasks):
            self.extra_sources = draw_extra_sources(
                self.pairs.cross_inst, records, max(self.shots) - 1, self.seed
            )
            used |= {name for names in self.extra_sources.values() for name in names}
            fewest = min((len(v) + 1 for v in self.extra_sources.values()), default=max(self.shots))
            if fewest < max(self.shots):
                self.notes.append(
                    f"shots: some pairs had only {fewest} annotated source object(s) in the {self.split!r} split"
                )
        if not self.pairs.cross_inst and any("cross_inst" in t.kinds for t in self.tasks):
            self.notes.append(f"no cross-instance pairs: the {self.split!r} split needs at least two objects")
        return [r for r in records if r.name in used]

    def _protocol(self, poses: PoseCache) -> dict:
        """How the pairs were made and the camera angles they actually have (for results.json/md)."""
        angles = pair_angles(self.pairs, poses)
        return {
            "cross_inst_camera": self.match_camera,
            "cross_view_baseline_deg": None if self.pairs_file else list(self.baseline_deg),
            "pairs_source": f"pairs file {self.pairs_file}" if self.pairs_file else f"seed {self.seed}",
            "measured_deg": {k: summarize_angles(v) for k, v in angles.items()},
        }

    def protocol_notes(self) -> list[str]:
        """The pair protocol as sentences for the results table."""
        return protocol_sentences(self.protocol, self.baseline_deg, bool(self.pairs_file), self.match_camera)

    def _check_annotations(self) -> None:
        """Fail early, in one line, when the data lacks what a task needs (checks one pair per task)."""
        by_name = {r.name: r for r in self.records}
        for task in self.tasks:
            if "cross_inst" in task.kinds and self.pairs.cross_inst:
                p = self.pairs.cross_inst[0]
                name, view = p.src, p.view
            elif "cross_view" in task.kinds and self.pairs.cross_view:
                p = self.pairs.cross_view[0]
                name, view = p.model_id, p.src_view
            else:
                raise DataError(
                    f"{self.datamodule.root}: {task.name}: no pairs to evaluate in the {self.split!r} split "
                    f"({len(self.records)} objects)"
                )
            task.required_annotations(by_name[name], view)

    def dataloaders(self) -> list[DataLoader]:
        """One validation DataLoader per task (batch size 1: one pair per step), in task order."""
        from featurenerf.data.datasets import ObjectViews

        dm = self.datamodule
        cache = None
        if self.teacher_available and any(t.uses_teacher for t in self.tasks):
            cache = dm.cache
            if cache is not None:
                cache.ensure(self.records, progress=True)  # the evaluated split may not be cached yet
        views = ObjectViews(self.image_size, dm.background, cache)
        loaders = []
        for task in self.tasks:
            items = PairItems(task, self.pairs_of(task.name), self.records, views, self.extra_sources)
            loaders.append(
                DataLoader(
                    items,
                    batch_size=1,
                    sampler=ShardSampler(len(items)),
                    collate_fn=single_item,
                    num_workers=getattr(dm, "workers", 0),
                )
            )
        return loaders

    # ------------------------------------------------------------------ model side
    def _name_parts(self) -> None:
        """Give the part tasks the data's part names (``--tasks.per_part``), or refuse in one line."""
        meta = getattr(self.datamodule, "meta", None)
        if meta is None:
            root = getattr(self.datamodule, "root", None)
            raise DataError(f"{root}: --tasks.per_part needs part names, and the data has no meta.json")
        for task in self.tasks:
            if hasattr(task, "set_part_names"):
                task.set_part_names(meta.part_names[1:])

    def _methods_for(self, module) -> list[str]:
        methods = ["featurenerf"]
        if module.net.feature_dim > 0:
            methods.append("featurenerf_v")
        if self.teacher_available:
            methods.append("teacher_2d")
        if self.pixelnerf is not None:
            methods.append("pixelnerf")
        methods.append("copy_input")  # novel views only (the other tasks drop it)
        return [m for m in methods if self.only is None or m in self.only]

    def _prepare(self, module) -> None:
        """Choose the methods (the same on every rank) and put metric states on the model's device."""
        methods = self._methods_for(module)
        if methods != self.methods:
            self.methods = methods
            for task in self.tasks:
                task.set_methods(methods)
            if "featurenerf_v" not in methods and module.net.feature_dim == 0:
                self._note("featurenerf_v: skipped (the model has no feature head, feature_dim 0)")
        for task in self.tasks:
            task.to(module.device)
        dtype, why = render_dtype(self.render_precision, module.device)
        self.render_dtype = dtype
        # In the protocol, so an earlier validate's tasks are kept only when they were rendered alike.
        self.protocol["render_precision"] = "bf16" if dtype is torch.bfloat16 else "32"
        self._note(f"fields rendered in {why}; labels matched in float32")

    def context(self, module) -> TaskContext:
        """The context of the current validation run (built on its first step)."""
        if self._ctx is None:
            self._prepare(module)
            models = {"model": module.net}
            if self.pixelnerf is not None:
                models["pixelnerf"] = self.pixelnerf.to(module.device).eval()
            trainer = getattr(module, "_trainer", None)
            sanity = trainer is not None and trainer.sanity_checking
            meta = getattr(self.datamodule, "meta", None)
            self._ctx = TaskContext(
                descriptors=Descriptors(models, self.methods, self.cache_bytes, self.render_dtype),
                models=models,
                picture_dir=None if sanity else self.out_dir / "pictures",
                pictures=self.num_pictures,
                step=trained_steps(module),
                num_parts=len(meta.part_names) if meta is not None else 8,
                num_keypoints=len(meta.keypoint_names) if meta is not None else 16,
            )
        return self._ctx

    def validation_step(self, module, batch: dict, batch_idx: int, dataloader_idx: int) -> None:
        """Evaluate one pair of task ``dataloader_idx - 1`` (loader 0 is the module's novel views)."""
        task = self.tasks[dataloader_idx - 1]
        task.current_pair = int(batch["pair"])
        task.step(self.context(module), batch)

    def on_validation_epoch_end(self, module) -> dict[str, dict[str, dict[str, float]]]:
        """Reduce, log, write and print the results; reset for the next validation run.

        Returns:
            ``{task: {method: {metric: value}}}``.
        """
        self._prepare(module)  # a rank that had no pair still takes part in the reduction
        trainer = getattr(module, "_trainer", None)
        if trainer is not None and not trainer.sanity_checking:
            self._note_truncation(trainer)
        results = {task.name: task.compute() for task in self.tasks}
        per_pair = {task.name: task.per_pair() for task in self.tasks}  # every rank joins the gather
        for task in self.tasks:
            task.reset()
        self._ctx = None
        if trainer is not None and trainer.sanity_checking:
            return results
        self.last_results = results
        if trainer is not None:
            flat = {
                f"tasks/{task}/{metric}/{method}": value
                for task, per_method in results.items()
                for method, metrics in per_method.items()
                for metric, value in metrics.items()
                if not math.isnan(value)
            }
            if flat:
                # Already reduced over ranks, so equal on all of them; "max" keeps them bit-exact.
                module.log_dict(flat, add_dataloader_idx=False, batch_size=1, sync_dist=True, reduce_fx="max")
        if trainer is None or trainer.is_global_zero:
            step = trained_steps(module)
            self.write(results, step, per_pair)
            print(self.table(results, step), flush=True)
        return results

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _note_truncation(self, trainer) -> None:
        """Say in the results when ``trainer.limit_val_batches`` cut a task's pairs short."""
        counts = list(getattr(trainer, "num_val_batches", []) or [])
        loaders = getattr(self.datamodule, "extra_val_loaders", [])
        for task, loader, done in zip(self.tasks, loaders, counts[1:]):
            total = len(loader)
            if done < total:
                self._note(
                    f"{task.name}: only {int(done)} of {total} pairs per process were evaluated "
                    "(trainer.limit_val_batches; pass --trainer.limit_val_batches 1.0 for all)"
                )

    # ------------------------------------------------------------------ results
    def describe(self) -> str:
        source = f"pairs file {self.pairs_file}" if self.pairs_file else f"seed {self.seed}"
        shots = (
            ""
            if self.shots == (1,)
            else f", part labels from {' and '.join(map(str, self.shots))} source object(s)"
        )
        base = self.pairs.head(self.num_pairs)
        own = [
            f"{t.name}: {len(p.cross_inst)} and {len(p.cross_view)}"
            for t in self.tasks
            if t.name in self.task_pairs
            for p in [self.pairs_of(t.name)]
        ]
        return (
            f"{len(base.cross_inst)} cross-instance and {len(base.cross_view)} cross-view pairs"
            + (f" ({'; '.join(own)})" if own else "")
            + f" from the {self.split!r} split ({source}), {self.image_size} px{shots}"
        )

    def header(self, step: int) -> str:
        """The first line of ``results.md``: the checkpoint step and what was evaluated (an earlier
        ``validate``'s results are kept only under the same line, :meth:`_earlier_results`)."""
        return f"Tasks at step {step}: {self.describe()}."

    def table(self, results: dict, step: int = 0, extra_notes: Sequence[str] = ()) -> str:
        """The results as one Markdown table (rows task / metric, columns methods) with notes."""
        notes = [*self.protocol_notes(), *self.notes, *extra_notes]
        return results_table(results, header=self.header(step), notes=notes)

    def write(self, results: dict, step: int = 0, per_pair: dict | None = None) -> None:
        """``results.json``, ``results.md``, ``pairs.json`` and (given) ``per_pair.json`` in ``out_dir``
        (each written atomically); ``per_pair`` is ``{task: Task.per_pair()}``.

        ``results.json`` is ``{task: {method: {metric: value}}, "protocol": {...}}``; ``protocol`` says how
        cross-instance cameras were matched and which cross-view baseline was used (and measured).
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        clean = {
            t: {m: {k: (None if math.isnan(v) else v) for k, v in vals.items()} for m, vals in per.items()}
            for t, per in results.items()
        }
        kept, kept_pairs = self._earlier_results(clean, step)
        table, kept_note = dict(results), []
        if kept:
            clean, table = {**kept, **clean}, {**kept, **results}
            per_pair = None if per_pair is None else {**kept_pairs, **per_pair}
            kept_note = [f"{', '.join(kept)}: kept from an earlier validate of the same checkpoint and pairs"]
        # "protocol" sits beside the tasks: how the pairs were made (camera matching, cross-view baseline).
        atomic_write_json(self.out_dir / "results.json", {**clean, "protocol": self.protocol})
        with atomic_write(self.out_dir / "results.md", "w") as fh:
            fh.write(self.table(table, step, kept_note) + "\n")
        write_pairs_file(self.out_dir / "pairs.json", self.pairs)
        if per_pair is not None:
            atomic_write_json(self.out_dir / "per_pair.json", {"step": step, "tasks": per_pair})

    def _earlier_results(self, results: dict, step: int) -> tuple[dict, dict]:
        """Tasks an earlier ``validate`` wrote into ``out_dir`` that this one does not redo, with their
        per-pair values, when they are comparable: same checkpoint step, pairs, protocol and settings.

        So ``validate --task part_seg`` then ``--task keypoints`` leaves both in ``results.json``. Tasks
        that are not comparable are replaced, and a line on stderr says which.
        """
        try:
            old = json.loads((self.out_dir / "results.json").read_text())
        except (OSError, ValueError):
            return {}, {}
        others = [t for t in old if t != "protocol" and t not in results] if isinstance(old, dict) else []
        if not others:  # the usual case (a fit's periodic validation): the larger files are not read
            return {}, {}
        try:
            old_pairs = json.loads((self.out_dir / "pairs.json").read_text())
            old_per_pair = json.loads((self.out_dir / "per_pair.json").read_text())
            old_header = (self.out_dir / "results.md").read_text().splitlines()[0]
        except (OSError, ValueError, IndexError):
            return {}, {}
        same = (
            old_pairs == json.loads(json.dumps(self.pairs.to_json()))
            and old.get("protocol") == json.loads(json.dumps(self.protocol))
            and old_per_pair.get("step") == step
            and old_header == self.header(step)
            and all(t in old_per_pair.get("tasks", {}) for t in others)
        )
        if not same:
            print(
                f"tasks: {self.out_dir / 'results.json'}: replacing {', '.join(others)} of an earlier validate "
                "(another checkpoint step, pairs or settings)",
                file=sys.stderr,
            )
            return {}, {}
        return {t: old[t] for t in others}, {t: old_per_pair["tasks"][t] for t in others}


def trained_steps(module) -> int:
    """The step of the evaluated weights (the loaded checkpoint's in ``validate``, not the trainer's 0)."""
    return int(getattr(module, "trained_steps", getattr(module, "global_step", 0)))


def load_pixelnerf(path: str | Path):
    """The ``pixelnerf`` baseline: the plain net of a fit checkpoint (:func:`featurenerf.load`), eval
    mode, CPU, frozen. A missing or unreadable file is a one-line ``DataError`` naming it."""
    from featurenerf.api import load

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pixelnerf checkpoint missing (--tasks.pixelnerf_ckpt)")
    net = load(path)  # CheckpointError (a DataError) names the file
    net.requires_grad_(False)
    print(f"tasks: pixelnerf baseline from {path}", file=sys.stderr)
    return net
