"""The compared descriptors: where each method's per-pixel and per-point vectors come from.

Methods (PAPER.md, "Evaluation protocol"):

* ``featurenerf``: the model's internal feature ``v_NeRF`` (512-d output of the last residual block);
  volume-rendered with the fine weights for pixels, queried directly at 3D points.
* ``featurenerf_v``: the model's distilled feature head ``v`` (rendered ``v̂`` for pixels).
* ``teacher_2d``: the 2D teacher's map of the image, upsampled (bilinear) to the image size and read at
  the pixels; for 3D points, the points are projected into the conditioning view and the upsampled map
  is read there bilinearly (no occlusion reasoning).
* ``pixelnerf``: ``v_NeRF`` of a second model trained without distillation.
* ``copy_input``: no descriptors; novel views only, the source image taken as the target view.

Every descriptor is L2-normalised, so matching is cosine nearest neighbour. Pixel descriptors are made
for the foreground pixels (true object mask) of a view, in row-major order, and cached per (model, view,
conditioning view) for the validation run: the part and keypoint tasks of the same pairs reuse them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featurenerf.geometry.cameras import project_points, rays_from_pixels, uv_to_grid
from featurenerf.lru import TensorLRU
from featurenerf.nerf.render_occupancy import grid_pays
from featurenerf.nerf.renderer import eval_noise, with_occupancy

from .precision import rendering

#: Methods that have per-pixel / per-point descriptors (what label-transfer tasks support by default).
DESCRIPTOR_METHODS = ("featurenerf", "featurenerf_v", "teacher_2d", "pixelnerf")
#: Methods in table order.
METHODS = (*DESCRIPTOR_METHODS, "copy_input")
#: Methods that are a field's output: method → (which model, which output).
FIELD_OUTPUTS = {
    "featurenerf": ("model", "hidden"),
    "featurenerf_v": ("model", "features"),
    "pixelnerf": ("pixelnerf", "hidden"),
}


@dataclass
class PosedView:
    """One view of one object, as a task item carries it (tensors on the model's device).

    Attributes:
        name: object id; view: view index.
        image: (3, S, S) in [0, 1]; mask: (S, S) bool object mask; pose: (4, 4) camera-to-world;
        focal, c: (2,) intrinsics at S; teacher: (C, h, w) teacher map of this image, or None.
    """

    name: str
    view: int
    image: Tensor
    mask: Tensor
    pose: Tensor
    focal: Tensor
    c: Tensor
    teacher: Tensor | None = None

    @classmethod
    def from_item(cls, side: dict) -> PosedView:
        """From one side (``src`` / ``trg``) of a task item."""
        return cls(
            side["name"],
            int(side["view"]),
            side["image"],
            side["mask"].bool(),
            side["pose"],
            side["focal"],
            side["c"],
            side.get("teacher"),
        )

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.view)

    @property
    def size(self) -> int:
        return int(self.image.shape[-1])

    def foreground_ij(self) -> Tensor:
        """(N, 2) (row, column) of the foreground pixels, row-major."""
        return self.mask.nonzero()


def pixel_uv(ij: Tensor) -> Tensor:
    """(N, 2) (row, column) → (N, 2) (u, v) pixel centres (``j + 0.5``, ``i + 0.5``)."""
    return ij.flip(-1).float() + 0.5


def encode_view(net: nn.Module, view: PosedView):
    """A batch-1 :class:`~featurenerf.nerf.model.Conditioning` from one posed image."""
    return net.encode(view.image[None, None], view.pose[None, None], view.focal[None], view.c[None])


def render_pixels(
    net: nn.Module, cond, view: PosedView, uv: Tensor, outputs: Sequence[str], chunk: int | None = None
) -> dict[str, Tensor]:
    """Volume-render named outputs at pixel positions of ``view``'s camera (fine pass, seeded jitter).

    Empty space is skipped: by ``cond``'s occupancy grid, built here when it has none and one pays for
    this many pixels (:func:`~featurenerf.nerf.render_occupancy.with_occupancy`), else the scene bound.

    Args:
        net: a :class:`~featurenerf.nerf.model.FeatureNeRFNet`; cond: its batch-1 conditioning.
        uv: (N, 2) pixel positions at ``view.size``.
    Returns:
        name → (N, C).
    """
    origins, dirs = rays_from_pixels(uv, view.pose, view.focal, view.c)
    chunk = chunk or getattr(net, "chunk", 4096)
    noise = eval_noise(net, (len(uv),), 0, origins)  # the training sample distribution, seeded
    cond = with_occupancy(net, cond, len(uv))  # once for all chunks
    parts: dict[str, list[Tensor]] = {k: [] for k in outputs}
    for start in range(0, len(uv), chunk):
        sl = slice(start, start + chunk)
        rays = (origins[None, sl], dirs[None, sl])
        fine = net.render_rays(cond, *rays, tuple(outputs), skip_empty=True, noise=noise.select(sl))["fine"]
        for k in outputs:
            parts[k].append(fine[k][0])
    return {k: torch.cat(v) if v else uv.new_zeros(0, 0) for k, v in parts.items()}


def query_points(
    net: nn.Module, cond, cond_view: PosedView, xyz: Tensor, outputs: Sequence[str]
) -> dict[str, Tensor]:
    """Field outputs at world points, seen along the rays of the conditioning camera.

    The view direction of each point is the direction from the conditioning camera's centre to it (the
    ray through its projection, as the release does), rather than an arbitrary fixed direction.

    Returns:
        name → (N, C).
    """
    dirs = F.normalize(xyz - cond_view.pose[:3, 3], dim=-1)
    chunk = 16 * getattr(net, "chunk", 4096)
    parts: dict[str, list[Tensor]] = {k: [] for k in outputs}
    for p, d in zip(xyz.split(chunk), dirs.split(chunk)):
        out = net.query(cond, p[None], d[None])
        for k in outputs:
            parts[k].append(out[k][0])
    return {k: torch.cat(v) for k, v in parts.items()}


def upsampled_teacher(view: PosedView) -> Tensor:
    """The teacher map of ``view``'s image, bilinearly upsampled to the image: (C, S, S) float32."""
    if view.teacher is None:
        raise ValueError(f"{view.name} view {view.view}: no teacher map in the task item")
    s = view.size
    return F.interpolate(view.teacher[None].float(), size=(s, s), mode="bilinear", align_corners=False)[0]


def sample_map(feature_map: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of a (C, S, S) map covering an S x S image at pixel positions (N, 2) → (N, C)."""
    s = feature_map.shape[-1]
    grid = uv_to_grid(uv, s, s)[None, :, None]  # (1, N, 1, 2)
    out = F.grid_sample(feature_map[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, :, 0].T


class Descriptors:
    """Per-method descriptors of foreground pixels and of 3D points, cached within a validation run.

    Args:
        models: ``{"model": net, "pixelnerf": net}`` (the second optional).
        methods: the methods to serve (a subset of :data:`METHODS`).
        cache_bytes: budget of the least-recently-used cache of rendered descriptors.
        render_dtype: autocast dtype of the field renders (``None``: float32); see :func:`rendering`.
    """

    def __init__(
        self,
        models: dict[str, nn.Module],
        methods: Sequence[str],
        cache_bytes: int = 1 << 30,
        render_dtype: torch.dtype | None = None,
    ) -> None:
        self.models = models
        self.methods = list(methods)
        self.cache_bytes = cache_bytes
        self.render_dtype = render_dtype
        self.store = TensorLRU(cache_bytes)
        # (model, conditioning view) → its occupancy grid. A grid is a function of the conditioning alone,
        # so the novel view of a cross-view pair and the part task's render of the same target from the
        # same source share one build (~0.17 s each at 64³ on one CPU thread) instead of two.
        self.grids: dict[Hashable, object] = {}

    def clear(self) -> None:
        """Forget every cached descriptor and grid (the model changes between validation runs)."""
        self.store.clear()
        self.grids.clear()

    def condition(self, model: str, view: PosedView, rays: int):
        """``model``'s conditioning on ``view``'s image for a render of ``rays`` rays: encoded, with the
        occupancy grid such a render builds (:func:`~featurenerf.nerf.render_occupancy.with_occupancy`),
        built once per validation run and conditioning view. Call it inside the render's precision
        context (:func:`~featurenerf.tasks.precision.rendering`): the grid is built there."""
        net = self.models[model]
        cond = encode_view(net, view)
        if not grid_pays(net, rays):
            return cond
        key = (model, view.key, view.size)
        grid = self.grids.get(key)
        if grid is None:
            cond = with_occupancy(net, cond, rays)
            self.grids[key] = cond.occupancy
            return cond
        if net.fast_rendering():
            cond = net.prepare(cond)  # as with_occupancy leaves it: renders share the injected maps
        return dataclasses.replace(cond, occupancy=grid)

    def _outputs_of(self, model: str) -> tuple[str, ...]:
        # One render serves every method that reads the same model (featurenerf and featurenerf_v).
        return tuple(
            dict.fromkeys(
                out for m, (mod, out) in FIELD_OUTPUTS.items() if mod == model and m in self.methods
            )
        )

    def _cached(self, key: Hashable, make) -> dict[str, Tensor]:
        return self.store.get(key, make)

    def foreground(self, method: str, view: PosedView, cond: PosedView) -> Tensor:
        """Normalised descriptors (N, D) of ``view``'s foreground pixels (row-major, see
        :meth:`PosedView.foreground_ij`). Field methods render ``view``'s camera conditioned on ``cond``'s
        image; ``teacher_2d`` reads ``view``'s own image (it is a 2D method and ignores ``cond``)."""
        ij = view.foreground_ij()
        if method == "teacher_2d":
            key = ("teacher_px", view.key, view.size)
            return self._cached(
                key, lambda: {"d": F.normalize(upsampled_teacher(view)[:, ij[:, 0], ij[:, 1]].T, dim=-1)}
            )["d"]
        model, output = FIELD_OUTPUTS[method]
        outputs = self._outputs_of(model)
        key = ("field_px", model, view.key, cond.key, view.size)

        def make() -> dict[str, Tensor]:
            net = self.models[model]
            with rendering(net, self.render_dtype):
                rendered = render_pixels(
                    net, self.condition(model, cond, len(ij)), view, pixel_uv(ij), outputs
                )
            return {k: F.normalize(v.float(), dim=-1) for k, v in rendered.items()}

        return self._cached(key, make)[output]

    def points(self, method: str, xyz: Tensor, cond: PosedView, points_key: Hashable) -> Tensor:
        """Normalised descriptors (N, D) of world points ``xyz`` (N, 3), conditioned on ``cond``'s image.

        ``points_key`` names the point set in the cache (e.g. ``("surface", object_name)``).
        """
        if method == "teacher_2d":
            key = ("teacher_pt", points_key, cond.key, cond.size)

            def make_teacher() -> dict[str, Tensor]:
                uv, _ = project_points(xyz, cond.pose, cond.focal, cond.c)
                return {"d": F.normalize(sample_map(upsampled_teacher(cond), uv), dim=-1)}

            return self._cached(key, make_teacher)["d"]
        model, output = FIELD_OUTPUTS[method]
        outputs = self._outputs_of(model)
        key = ("field_pt", model, points_key, cond.key, cond.size)

        def make() -> dict[str, Tensor]:
            net = self.models[model]
            with rendering(net, self.render_dtype):
                out = query_points(net, encode_view(net, cond), cond, xyz, outputs)
            return {k: F.normalize(v.float(), dim=-1) for k, v in out.items()}

        return self._cached(key, make)[output]
