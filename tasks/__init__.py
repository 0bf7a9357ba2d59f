"""Downstream tasks of FeatureNeRF's evaluation protocol, and their registry.

Built-ins: ``part_seg_2d``, ``part_seg_3d``, ``keypoints_2d``, ``keypoints_3d`` (one-shot label transfer
by cosine nearest neighbour, on cross-instance and cross-view pairs), ``novel_view`` (PSNR / SSIM of the
target view rendered from the source image) and the diagnostic ``canonical_coords`` (how well the
coordinate head x̂ names surface points' object-frame positions, and how consistently across views). Each
task is a class with torchmetrics-style ``update`` / ``compute`` / ``reset``;
:class:`~featurenerf.tasks.suite.TaskSuite` runs a selection of them as Lightning validation loops
(``featurenerf validate --task part_seg keypoints``) and compares the methods ``featurenerf``,
``featurenerf_v``, ``teacher_2d`` and ``pixelnerf`` in one table.

Third-party packages add tasks through the ``featurenerf.tasks`` entry-point group::

    [project.entry-points."featurenerf.tasks"]
    mine = "mypkg:MyTask"        # a Task subclass decorated with @register_task("mine")
"""

from . import coords, keypoints, novel_view, part_seg  # noqa: F401  (registers the built-in tasks)
from .base import TASKS, Task, TaskContext, list_tasks, register_task
from .descriptors import METHODS, Descriptors, PosedView
from .metrics import (
    PCK,
    PCK_2D_PIXELS_AT_128,
    PCK_3D_UNITS,
    PairMean,
    PartMIoU,
    cosine_nearest,
    part_miou,
    pck,
)
from .pairs import CrossInstancePair, CrossViewPair, PairSet, read_pairs_file, sample_pairs, write_pairs_file

__all__ = [
    "METHODS",
    "PCK",
    "PCK_2D_PIXELS_AT_128",
    "PCK_3D_UNITS",
    "TASKS",
    "CrossInstancePair",
    "CrossViewPair",
    "Descriptors",
    "PairMean",
    "PairSet",
    "PartMIoU",
    "PosedView",
    "Task",
    "TaskContext",
    "cosine_nearest",
    "list_tasks",
    "part_miou",
    "pck",
    "read_pairs_file",
    "register_task",
    "sample_pairs",
    "write_pairs_file",
]
