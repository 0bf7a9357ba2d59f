"""``parts_oracle``: a diagnostic teacher whose features are the ground-truth part maps.

Validation only, never a default. Its map of a view is the one-hot part labels of that exact (object,
view) from the dataset's annotations (``parts/NNNNNN.png``), average-pooled to a real teacher's stride:
each cell holds the fraction of its pixels that belong to each part (background included), so
``feature_dim`` is the number of parts including background. Like a real teacher it sees each image
resized to ``input_size`` (by default ``efficientnet_lite0``'s 160, so on 64-pixel toy views a cell spans
3.2 image pixels as the real teacher's does; at the native 64 pixels a stride-8 cell spans 8 and the map
itself transfers parts at ~55 % mIoU, a ceiling the field cannot pass). Distilled through the field, its
rendered head (``featurenerf_v``) should transfer parts almost perfectly; when it does not, the distil → render →
transfer chain has a bug, whatever the real teachers do.

The features depend on the annotations, not on the pixels, so the teacher declares
:attr:`~featurenerf.teachers.base.Teacher.needs_annotations`: the feature cache passes the record and view
indices of every image (:class:`~featurenerf.teachers.base.ViewSource`) and digests the part maps with
the images, so editing a part map makes the cached maps stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from featurenerf.errors import ConfigError

from .base import Teacher, TeacherInfo, ViewSource, register_teacher
from .efficientnet import DEFAULT_INPUT_SIZE as REAL_TEACHER_INPUT_SIZE


@register_teacher("parts_oracle")
class PartsOracle(Teacher):
    """One-hot ground-truth part maps, average-pooled to ``stride`` (soft part fractions per cell).

    Args:
        num_parts: part labels including background (0); 5 for the toy cars and chairs. A label map with
            a larger label is refused in one line naming this option.
        stride: input pixels per feature cell (8, like DINO ViT-S/8 or HED's conv4_3).
        input_size: square side the label maps are resized to (nearest) before pooling, like a real
            teacher's input; ``None`` keeps the image's size (rounded to the stride).
    """

    needs_annotations = True

    def __init__(
        self, num_parts: int = 5, stride: int = 8, input_size: int | None = REAL_TEACHER_INPUT_SIZE
    ) -> None:
        super().__init__()
        if num_parts < 2 or stride < 1:
            raise ConfigError(f"parts_oracle needs num_parts >= 2 and stride >= 1, got {num_parts}, {stride}")
        if input_size is not None and (input_size < stride or input_size % stride):
            raise ConfigError(
                f"parts_oracle input_size must be a multiple of stride {stride}, got {input_size}"
            )
        self.num_parts = int(num_parts)
        self._stride = int(stride)
        self._input_size = None if input_size is None else int(input_size)

    @property
    def feature_dim(self) -> int:
        return self.num_parts

    @property
    def stride(self) -> int:
        return self._stride

    @property
    def input_size(self) -> int | None:
        return self._input_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return (0.0, 0.0, 0.0)

    @property
    def std(self) -> tuple[float, float, float]:
        return (1.0, 1.0, 1.0)

    @property
    def weights_source(self) -> str:
        return "ground-truth part maps (diagnostic oracle)"

    @classmethod
    def describe(cls) -> TeacherInfo:
        return TeacherInfo(5, 8, REAL_TEACHER_INPUT_SIZE, "ground-truth part maps (diagnostic oracle)")

    def cache_fields(self) -> dict[str, Any]:
        return {"num_parts": self.num_parts}

    def input_files(self, record: Any) -> list[Path]:
        from featurenerf.data.annotations import part_map_path

        return [part_map_path(record, v) for v in range(record.num_views)]

    def extract(self, images: Tensor) -> Tensor:
        raise ValueError("parts_oracle reads each view's part map: call it with source=ViewSource(...)")

    def extract_views(self, images: Tensor, source: ViewSource) -> Tensor:
        """Soft part fractions ``(B, num_parts, H' / stride, W' / stride)`` of the views in ``source``."""
        from featurenerf.data.annotations import load_part_map, part_map_path
        from featurenerf.data.srn import DataError

        h, w = images.shape[-2:]
        maps = []
        for v in source.views:
            labels = load_part_map(source.record, v)
            if int(labels.max()) >= self.num_parts:
                raise DataError(
                    f"{part_map_path(source.record, v)}: part label {int(labels.max())} but parts_oracle "
                    f"has num_parts={self.num_parts} (background included); set the teacher's num_parts"
                )
            if tuple(labels.shape) != (h, w):
                # Nearest at pixel centres, like load_part_map's resize: labels are never blended.
                labels = F.interpolate(labels[None, None].float(), size=(h, w), mode="nearest-exact")
                labels = labels[0, 0].round().long()
            maps.append(labels)
        one_hot = F.one_hot(torch.stack(maps), self.num_parts).permute(0, 3, 1, 2).float()
        fractions = F.avg_pool2d(one_hot, self._stride)
        return fractions.to(device=images.device, dtype=self.dtype)
