"""The :class:`Task` interface, its registry, and the context a task's model work runs in.

A task evaluates the compared methods on pairs (see :mod:`featurenerf.tasks.pairs`). It has three sides:

* **data** (DataLoader workers): :meth:`Task.annotations` loads what one view of one object needs
  (part map, 2D/3D keypoints, labelled points); a missing file becomes one line saying which file the
  task needs.
* **model work** (``validation_step``): :meth:`Task.step` gets one pair item, asks the
  :class:`TaskContext` for each method's descriptors, transfers labels and calls :meth:`Task.update`.
* **metrics**, torchmetrics-style: :meth:`Task.update` / :meth:`Task.compute` / :meth:`Task.reset`; the
  states are :class:`torchmetrics.Metric` sums, so ``compute`` is exact under DDP.

Third-party tasks register with ``@register_task("name")`` or the ``featurenerf.tasks`` entry-point group.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torchmetrics import Metric

from featurenerf.data.srn import DataError, ObjectRecord
from featurenerf.registry import Registry

from .descriptors import DESCRIPTOR_METHODS, METHODS, Descriptors
from .metrics import PairMean
from .pairs import KINDS
from .precision import rendering

TASKS: Registry[Task] = Registry("task", "featurenerf.tasks")
ANNOTATION_HINT = "see README: annotated format"


def register_task(name: str):  # noqa: ANN201 - returns the registry's class decorator
    """Class decorator: ``@register_task("name")`` adds a :class:`Task` subclass to the registry."""
    return TASKS.register(name)


def list_tasks() -> list[str]:
    """Registered task names, sorted."""
    return TASKS.list()


@dataclass
class TaskContext:
    """What a task's :meth:`Task.step` may use.

    Attributes:
        descriptors: per-method descriptors (cached within the validation run).
        models: ``"model"`` (the evaluated net) and, when given, ``"pixelnerf"``.
        picture_dir: where pictures go (``None``: no pictures, e.g. during the sanity check).
        pictures: pairs of each kind that get a picture (the first ones).
        step: the trainer's global step (names pictures taken during fit).
        num_parts / num_keypoints: label counts from the dataset's ``meta.json`` (picture colours).
    """

    descriptors: Descriptors
    models: dict[str, nn.Module]
    picture_dir: Path | None = None
    pictures: int = 2
    step: int = 0
    num_parts: int = 8
    num_keypoints: int = 16
    extra: dict[str, Any] = field(default_factory=dict)

    def rendering(self, net: nn.Module):  # noqa: ANN201 - a context manager
        """The context a task renders ``net`` in (``--tasks.render_precision``): ``with
        ctx.rendering(net): ...``. Descriptors from :attr:`descriptors` are rendered in it already."""
        return rendering(net, self.descriptors.render_dtype)

    def wants_picture(self, item: dict) -> bool:
        return self.picture_dir is not None and int(item["pair"]) < self.pictures

    def picture_path(self, task: str, item: dict) -> Path:
        assert self.picture_dir is not None
        return self.picture_dir / task / f"{item['kind']}{int(item['pair']):03d}_step{self.step:06d}.png"


class Task(abc.ABC):
    """One evaluation: label transfer (or view synthesis) over pairs, measured per method.

    Args:
        methods: the methods to evaluate (those the task does not support are dropped).
        image_size: side of the images the task works at (thresholds in pixels scale with it).
    """

    registry_name: ClassVar[str | None] = None
    #: Pair kinds the task evaluates.
    kinds: ClassVar[tuple[str, ...]] = KINDS
    #: Methods the task can evaluate.
    supported_methods: ClassVar[tuple[str, ...]] = DESCRIPTOR_METHODS
    #: What the task needs from the dataset, for the one-line error on unannotated data.
    needs: ClassVar[str] = ""
    #: Whether a side's ``teacher`` map is used (the data side loads it only then).
    uses_teacher: ClassVar[bool] = True
    #: Whether the task can vote over several annotated sources (``--tasks.shots``); such a task gets
    #: ``item["extra_src"]``, the sides of further source objects, on cross-instance pairs.
    few_shot: ClassVar[bool] = False
    #: The numbers of source objects each cross-instance pair is evaluated with (see :meth:`set_shots`).
    shots: tuple[int, ...] = (1,)

    def __init__(self, methods: Sequence[str] = METHODS, image_size: int = 128) -> None:
        self.image_size = int(image_size)
        self.methods: list[str] = []
        self._metrics: dict[tuple[str, str], dict[str, Metric]] = {}
        #: Index (within its kind) of the pair being evaluated; kept beside each per-pair value.
        self.current_pair = -1
        self.set_methods(methods)

    @property
    def name(self) -> str:
        return self.registry_name or type(self).__name__

    # ------------------------------------------------------------------ metrics (torchmetrics-style)
    @abc.abstractmethod
    def new_metrics(self) -> dict[str, Metric]:
        """Fresh metrics of one (pair kind, method): name → metric (vector metrics carry ``labels``)."""

    def kind_metrics(self, kind: str) -> dict[str, Metric]:
        """Fresh metrics of one (pair kind, method). The default is :meth:`new_metrics`; a few-shot task
        adds ``"<name>@<K>shot"`` for every ``K > 1`` in :attr:`shots` on cross-instance pairs (``K = 1``
        keeps the plain name, the paper's one-shot setting)."""
        base = self.new_metrics()
        if not self.few_shot or kind != "cross_inst":
            return base
        out = {name: metric for name, metric in base.items() if 1 in self.shots}
        for k in self.shots:
            if k > 1:
                out.update({f"{name}@{k}shot": metric for name, metric in self.new_metrics().items()})
        return out

    def set_shots(self, shots: Sequence[int]) -> None:
        """Evaluate cross-instance pairs with each number of annotated sources in ``shots`` (a few-shot
        task only; metric states are recreated)."""
        if not self.few_shot:
            raise ValueError(f"{self.name} does not support several source objects (--tasks.shots)")
        self.shots = tuple(sorted(set(int(k) for k in shots)))
        self.set_methods(self.methods)

    def metric_name(self, name: str, kind: str, shots: int) -> str:
        """The metric of ``name`` measured with ``shots`` sources on ``kind`` pairs (see :meth:`kind_metrics`)."""
        return f"{name}@{shots}shot" if kind == "cross_inst" and shots > 1 else name

    def set_methods(self, methods: Sequence[str]) -> None:
        """Choose the evaluated methods (order kept) and create their metric states."""
        self.methods = [m for m in methods if m in self.supported_methods]
        self._metrics = {(k, m): self.kind_metrics(k) for k in self.kinds for m in self.methods}

    def metric(self, kind: str, method: str, name: str) -> Metric:
        return self._metrics[(kind, method)][name]

    def update(self, kind: str, method: str, name: str, *args: Any, **kwargs: Any) -> None:
        """Add one pair's observation to metric ``name`` of (``kind``, ``method``)."""
        metric = self.metric(kind, method, name)
        if isinstance(metric, PairMean):
            kwargs.setdefault("pair", self.current_pair)
        metric.update(*args, **kwargs)

    def compute(self) -> dict[str, dict[str, float]]:
        """``{method: {"<kind>/<metric>": value}}``; NaN where no pair was measured.

        Under DDP every rank must call it (the metric states are reduced across ranks).
        """
        out: dict[str, dict[str, float]] = {m: {} for m in self.methods}
        for (kind, method), metrics in self._metrics.items():
            for name, metric in metrics.items():
                with warnings.catch_warnings():
                    # A rank may hold no pair of a kind; its zero sums still join the reduction.
                    warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
                    value = metric.compute().reshape(-1).tolist()
                labels = getattr(metric, "labels", None) or (
                    [name] if len(value) == 1 else [f"{name}{i}" for i in range(len(value))]
                )
                for label, v in zip(labels, value):
                    out[method][f"{kind}/{label}"] = float(v)
        return out

    def per_pair(self) -> dict[str, dict[str, dict[str, list]]]:
        """Per-pair values: ``{method: {kind: {"pairs": [index, ...], "<metric>": [value, ...]}}}``.

        Only :class:`~featurenerf.tasks.metrics.PairMean` metrics (every built-in one) are listed; pairs
        a metric did not count are absent. Under DDP every rank must call it (the lists are gathered).
        """
        out: dict[str, dict[str, dict[str, list]]] = {m: {} for m in self.methods}
        for (kind, method), metrics in self._metrics.items():
            entry: dict[str, list] = {}
            for name, metric in metrics.items():
                if not isinstance(metric, PairMean):
                    continue
                ids, values = metric.per_pair()
                if "pairs" in entry and entry["pairs"] != ids.tolist():
                    raise RuntimeError(f"{self.name}: metrics of {kind}/{method} counted different pairs")
                entry["pairs"] = ids.tolist()
                labels = getattr(metric, "labels", None) or (
                    [name] if metric.size == 1 else [f"{name}{i}" for i in range(metric.size)]
                )
                for i, label in enumerate(labels):
                    entry[label] = values[:, i].tolist()
            if entry:
                out[method][kind] = entry
        return out

    def reset(self) -> None:
        for metrics in self._metrics.values():
            for metric in metrics.values():
                metric.reset()

    def to(self, device: torch.device | str) -> Task:
        """Move the metric states (so the DDP reduction runs on the backend's device)."""
        for metrics in self._metrics.values():
            for metric in metrics.values():
                metric.to(device)
        return self

    # ------------------------------------------------------------------ data side
    def annotations(self, record: ObjectRecord, view: int) -> dict[str, Any]:
        """Annotations of one view of one object for a task item (tensors; CPU, in a DataLoader worker)."""
        return {}

    def required_annotations(self, record: ObjectRecord, view: int) -> dict[str, Any]:
        """:meth:`annotations`, with a missing or broken file reported as which file the task needs."""
        try:
            return self.annotations(record, view)
        except DataError as err:
            raise DataError(f"{err}; {self.name} needs {self.needs} ({ANNOTATION_HINT})") from err

    # ------------------------------------------------------------------ model side
    @abc.abstractmethod
    def step(self, ctx: TaskContext, item: dict) -> None:
        """Evaluate every method on one pair item and update the metrics (pictures for the first pairs)."""
