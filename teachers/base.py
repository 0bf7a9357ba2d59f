"""The :class:`Teacher` interface: a frozen 2D feature extractor that declares its own metadata.

A teacher maps images ``(B, 3, H, W)`` in [0, 1] to feature maps ``(B, C, h, w)``. It resizes and
normalises the images itself, as its metadata declares, so callers never need to know which model is
behind it: they read :attr:`Teacher.feature_dim`, :attr:`Teacher.stride`, :meth:`Teacher.output_size` and
:meth:`Teacher.cache_key`, never the teacher's name.

Subclasses implement :meth:`Teacher.extract` (normalised, resized images → features) and
:meth:`Teacher.cache_fields` (everything else that changes the output, such as the weights' identity, the
layer or the timestep) and declare the metadata properties.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featurenerf.registry import Registry

#: Bump when a change in this module changes every teacher's output (invalidates all feature caches).
INTERFACE_VERSION = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str) -> torch.dtype:
    """``"float32" | "float16" | "bfloat16"`` → the torch dtype (a clear error otherwise)."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"teacher dtype must be one of {', '.join(_DTYPES)}, got {name!r}") from None


@dataclasses.dataclass(frozen=True)
class ViewSource:
    """Which stored views a batch of images shows: the object and one view index per image.

    Passed to teachers that declare :attr:`Teacher.needs_annotations` (diagnostic oracles whose features
    are the data's annotations of the exact view), by the feature cache that computes their maps.
    """

    record: Any  # featurenerf.data.srn.ObjectRecord (not imported: teachers stay free of the data code)
    views: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TeacherInfo:
    """What ``featurenerf teachers list`` shows for a teacher built with its default arguments."""

    feature_dim: int
    stride: int
    input_size: int | None
    weights_source: str


class Teacher(nn.Module, abc.ABC):
    """A frozen image feature extractor (always in eval mode, no parameter requires grad).

    Subclasses declare metadata properties and implement :meth:`extract` and :meth:`cache_fields`.
    Submodules are frozen as they are assigned, so a subclass only has to build them.
    """

    #: Set by ``@register_teacher``; ``None`` for unregistered subclasses.
    registry_name: str | None = None
    #: Bump in a subclass when its implementation changes its output (invalidates its caches).
    version: int = 1
    #: True for diagnostic teachers whose features come from the dataset's annotations of the exact
    #: (object, view) of each image rather than from the pixels alone: they implement
    #: :meth:`extract_views`, and callers pass ``source=ViewSource(record, views)`` (the feature cache
    #: does). Such a teacher cannot run on images without their record.
    needs_annotations: bool = False

    # ---- metadata a subclass declares -------------------------------------------------------------
    @property
    @abc.abstractmethod
    def feature_dim(self) -> int:
        """Channels ``C`` of the returned feature map."""

    @property
    @abc.abstractmethod
    def stride(self) -> int:
        """Input pixels (at the teacher's own input resolution) per feature cell."""

    @property
    @abc.abstractmethod
    def input_size(self) -> int | None:
        """Side of the square the teacher resizes every image to; ``None``: any size (see
        :attr:`input_multiple`)."""

    @property
    @abc.abstractmethod
    def mean(self) -> tuple[float, float, float]:
        """Per-channel RGB mean subtracted from [0, 1] images."""

    @property
    @abc.abstractmethod
    def std(self) -> tuple[float, float, float]:
        """Per-channel RGB standard deviation the images are divided by after subtracting :attr:`mean`."""

    @property
    @abc.abstractmethod
    def weights_source(self) -> str:
        """Where the weights came from, in a few words (a path, a package, ``"random init"``)."""

    @abc.abstractmethod
    def cache_fields(self) -> dict[str, Any]:
        """JSON-able description of everything not in the metadata that changes the output:
        weights identity, layer, facet, timestep, ... (see :meth:`cache_key`)."""

    @abc.abstractmethod
    def extract(self, images: Tensor) -> Tensor:
        """Features of resized, normalised images.

        Args:
            images: ``(B, 3, H', W')`` with ``(H', W') = self.input_hw(H, W)``, already normalised by
                :attr:`mean` / :attr:`std`, in :attr:`dtype`.
        Returns:
            ``(B, feature_dim, H' // stride, W' // stride)``.
        """

    def extract_views(self, images: Tensor, source: ViewSource) -> Tensor:
        """Like :meth:`extract`, for teachers that declare :attr:`needs_annotations`: ``source`` names
        the (object, view) of each image."""
        raise NotImplementedError(f"{type(self).__name__} does not declare needs_annotations")

    def input_files(self, record: Any) -> list[Any]:
        """Files of ``record`` besides its images that change this teacher's output (the part maps an
        oracle reads, a precomputed teacher's feature file); the feature cache digests them with the images, so editing them makes it stale."""
        return []

    # ---- derived behaviour ------------------------------------------------------------------------
    @property
    def input_multiple(self) -> int:
        """When :attr:`input_size` is ``None``, input sides are rounded to a multiple of this."""
        return self.stride

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the teacher and dtype of the features it returns."""
        for p in self.parameters():
            return p.dtype
        return torch.float32

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def input_hw(self, height: int, width: int) -> tuple[int, int]:
        """The ``(H', W')`` an ``height`` x ``width`` image is resized to before :meth:`extract`."""
        if self.input_size is not None:
            return self.input_size, self.input_size
        m = self.input_multiple
        return max(m, round(height / m) * m), max(m, round(width / m) * m)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Feature-map size ``(h, w)`` for an input image of ``height`` x ``width``."""
        h, w = self.input_hw(height, width)
        return h // self.stride, w // self.stride

    def cache_key(self) -> str:
        """A short string that changes whenever anything that changes the output changes.

        It hashes the class, its :attr:`version`, the metadata (size, stride, normalisation, dtype) and
        :meth:`cache_fields` (weights identity, layer, facet, timestep, ...). The registry name leads so a
        cache folder is readable: ``hed_vgg16-3f9c0a1b2d4e5f60``.
        """
        cls = type(self)
        fields = {
            "interface": INTERFACE_VERSION,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "version": self.version,
            "feature_dim": self.feature_dim,
            "stride": self.stride,
            "input_size": self.input_size,
            "input_multiple": self.input_multiple,
            "mean": list(self.mean),
            "std": list(self.std),
            "dtype": str(self.dtype),
            **self.cache_fields(),
        }
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        digest = hashlib.sha1(blob).hexdigest()[:16]
        return f"{self.registry_name or cls.__name__.lower()}-{digest}"

    @classmethod
    def describe(cls) -> TeacherInfo:
        """Metadata of the teacher built with default arguments, for listing.

        The default builds the teacher; subclasses whose default weights are large (or not on disk)
        override it to answer from class-level facts without loading anything.
        """
        teacher = cls()
        return TeacherInfo(teacher.feature_dim, teacher.stride, teacher.input_size, teacher.weights_source)

    # ---- frozen, eval-only -------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        # Freeze at assignment so every subclass (plugins included) is frozen without remembering to.
        if isinstance(value, nn.Module):
            value.requires_grad_(False)
            value.eval()
        elif isinstance(value, nn.Parameter):
            value.requires_grad_(False)
        super().__setattr__(name, value)

    def train(self, mode: bool = True) -> Teacher:
        """Teachers stay in eval mode (dropout off, norms frozen) whatever the caller asks."""
        return super().train(False)

    # ---- the call ---------------------------------------------------------------------------------
    def preprocess(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] → resized (bilinear, antialiased when shrinking) and normalised
        ``(B, 3, H', W')`` in :attr:`dtype` on :attr:`device`."""
        _check_images(images)
        images = images.to(device=self.device, dtype=torch.float32)
        hw = self.input_hw(images.shape[-2], images.shape[-1])
        if tuple(images.shape[-2:]) != hw:
            images = F.interpolate(images, size=hw, mode="bilinear", align_corners=False, antialias=True)
        mean = images.new_tensor(self.mean).view(1, 3, 1, 1)
        std = images.new_tensor(self.std).view(1, 3, 1, 1)
        return ((images - mean) / std).to(self.dtype)

    def forward(self, images: Tensor, mask: Tensor | None = None, source: ViewSource | None = None) -> Tensor:
        """Feature maps of a batch of images.

        Args:
            images: ``(B, 3, H, W)`` floats in [0, 1], any ``H``, ``W``.
            mask: optional object mask ``(B, 1, H, W)`` or ``(B, H, W)`` (bool or [0, 1] floats) at the
                image resolution. Feature cells less than half covered by the object are set to 0, as
                FeatureNeRF does for background features.
            source: the (object, view) of each image; required by teachers that declare
                :attr:`needs_annotations`, ignored by the others.
        Returns:
            ``(B, feature_dim, h, w)`` in :attr:`dtype`, ``(h, w) = self.output_size(H, W)``.
        """
        if self.needs_annotations:
            if source is None:
                raise ValueError(
                    f"teacher {self.registry_name or type(self).__name__} reads the annotations of each "
                    "image's (object, view): it runs through the feature cache (fit, validate, "
                    "`featurenerf teachers cache`), not on bare images"
                )
            if len(source.views) != images.shape[0]:
                raise ValueError(f"source names {len(source.views)} views for {images.shape[0]} images")
        with torch.no_grad():
            x = self.preprocess(images)
            features = self.extract_views(x, source) if self.needs_annotations else self.extract(x)
            expected = (images.shape[0], self.feature_dim, *self.output_size(*images.shape[-2:]))
            if tuple(features.shape) != expected:
                raise RuntimeError(
                    f"{type(self).__name__}.extract returned {tuple(features.shape)}, declared {expected}"
                )
            if mask is not None:
                features = features * foreground_cells(mask, features.shape[-2:]).to(features)
        return features


def foreground_cells(mask: Tensor, size: Sequence[int]) -> Tensor:
    """Which feature cells belong to the object.

    Args:
        mask: ``(B, 1, H, W)`` or ``(B, H, W)``, bool or floats in [0, 1].
        size: ``(h, w)`` of the feature grid.
    Returns:
        ``(B, 1, h, w)`` bool: a cell is foreground when at least half of its pixels are (an area vote,
        not nearest-neighbour sampling, which would look only at one corner pixel of each cell).
    """
    if mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, 1, H, W) or (B, H, W), got {tuple(mask.shape)}")
    coverage = F.interpolate(mask.float(), size=tuple(size), mode="area")
    return coverage >= 0.5


def normalize_per_location(features: Sequence[Tensor]) -> list[Tensor]:
    """Scale each map so that every location's vector has norm ``sqrt(C_total / L)``.

    With ``L`` maps of ``C_total`` channels in all, each map then carries the same share of the energy at
    every location whatever its width or raw magnitude, and the concatenation has a root-mean-square of
    exactly 1 per entry (values are O(1), so the distillation loss weight means the same for any teacher).

    Args:
        features: ``L`` maps ``(B, C_l, h, w)``.
    Returns:
        The ``L`` rescaled maps (all-zero vectors stay zero).
    """
    total = sum(f.shape[1] for f in features)
    target = (total / len(features)) ** 0.5
    return [target * F.normalize(f, dim=1, eps=1e-6) for f in features]


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"teacher input must be (B, 3, H, W) images in [0, 1], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"teacher input must be floats in [0, 1], got dtype {images.dtype}")


TEACHERS: Registry[Teacher] = Registry("teacher", "featurenerf.teachers")


def register_teacher(name: str):  # noqa: ANN201 - returns the registry's class decorator
    """Class decorator: ``@register_teacher("name")`` adds a :class:`Teacher` subclass to the registry."""
    return TEACHERS.register(name)


def build_teacher(name: str, **kwargs: Any) -> Teacher:
    """Instantiate the teacher registered as ``name`` (an unknown name lists the known ones)."""
    return TEACHERS.create(name, **kwargs)


def list_teachers() -> list[str]:
    """Registered teacher names (built-ins and installed plugins), sorted."""
    return TEACHERS.list()


def resolve_teacher(spec: str | Teacher | dict[str, Any]) -> Teacher:
    """A teacher from whatever a config holds.

    Accepts an instance (returned as is), a registry name (``"hed_vgg16"``), a dotted class path
    (``"mypkg.MyTeacher"``), ``{"name": ..., **kwargs}`` or ``{"class_path": ..., "init_args": {...}}``
    (``class_path`` may also be a registry name).
    """
    if isinstance(spec, Teacher):
        return spec
    if isinstance(spec, str):
        return _class_for(spec)()
    if isinstance(spec, dict):
        spec = dict(spec)
        if "class_path" in spec:
            init_args = spec.pop("init_args", None) or {}
            if spec.keys() - {"class_path"}:
                raise ValueError(f"teacher spec with class_path takes only init_args, got {sorted(spec)}")
            return _class_for(spec["class_path"])(**init_args)
        if "name" in spec:
            return _class_for(spec.pop("name"))(**spec)
        raise ValueError(f"teacher spec needs 'name' or 'class_path', got keys {sorted(spec)}")
    raise TypeError(f"teacher spec must be a name, a dict or a Teacher, got {type(spec).__name__}")


def _class_for(name: str) -> type[Teacher]:
    if name in TEACHERS or "." not in name:
        return TEACHERS.get(name)
    import importlib

    module_name, _, attr = name.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import teacher class {name!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, Teacher)):
        raise ValueError(f"{name!r} is not a Teacher subclass")
    return cls
