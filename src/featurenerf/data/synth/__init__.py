"""Procedural annotated datasets: part-based toy cars and chairs rendered exactly, in the SRN layout.

``generate_dataset("toycar", out, objects=64, views=50, size=128, seed=0)`` writes RGBA views, OpenCV
camera-to-world poses, SRN intrinsics, per-view part label maps, 3D keypoints and labelled surface points
(see :mod:`featurenerf.data.annotations` for the format). The command line is ``featurenerf data synth``.
"""

from featurenerf.data.synth.generate import assign_splits, generate_dataset, render_object
from featurenerf.data.synth.shapes import CATEGORIES, KEYPOINT_NAMES, KEYPOINT_PARTS, PART_NAMES, make_shape

__all__ = [
    "CATEGORIES",
    "KEYPOINT_NAMES",
    "KEYPOINT_PARTS",
    "PART_NAMES",
    "assign_splits",
    "generate_dataset",
    "make_shape",
    "render_object",
]
