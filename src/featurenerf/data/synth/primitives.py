"""Axis-aligned boxes and capped cylinders: exact ray intersection, surface sampling, inside tests.

Everything is numpy float64 and vectorised over rays ``(R, 3)`` or points ``(N, 3)``, so a whole view
(or several) is intersected in a handful of array operations and results are bit-identical run to run.
A primitive carries its part label and colour; the renderer never looks at anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

_EPS = 1e-9


@dataclass(frozen=True)
class Box:
    """Axis-aligned box with ``centre`` (3,) and ``half`` extents (3,)."""

    centre: np.ndarray
    half: np.ndarray
    label: int
    colour: np.ndarray  # (3,) RGB in [0, 1]

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First hit of rays ``(R, 3)`` (slab method): distance ``t`` (R,) (inf on a miss), normals (R, 3)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dirs
            t1 = (self.centre - self.half - origins) * inv
            t2 = (self.centre + self.half - origins) * inv
        lo, hi = np.fmin(t1, t2), np.fmax(t1, t2)
        axis = np.argmax(lo, axis=1)
        t_in = np.take_along_axis(lo, axis[:, None], 1)[:, 0]
        t_out = hi.min(axis=1)
        # Cameras are always outside, so the entry point is the visible one.
        hit = (t_out >= t_in) & (t_in > _EPS)
        t = np.where(hit, t_in, np.inf)
        normals = np.zeros_like(dirs)
        rows = np.arange(len(dirs))
        normals[rows, axis] = -np.sign(dirs[rows, axis])
        return t, normals

    def faces(self) -> list[tuple[float, np.ndarray]]:
        """(area, sampler-params) for each of the 6 faces: axis, sign."""
        out = []
        for axis in range(3):
            a, b = [k for k in range(3) if k != axis]
            area = 4.0 * self.half[a] * self.half[b]
            out += [(area, (axis, -1.0)), (area, (axis, 1.0))]
        return out

    def sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points uniform by area on the box surface, (n, 3)."""
        faces = self.faces()
        areas = np.array([f[0] for f in faces])
        which = rng.choice(len(faces), size=n, p=areas / areas.sum())
        pts = self.centre + (rng.uniform(-1.0, 1.0, size=(n, 3)) * self.half)
        for i, (_, (axis, sign)) in enumerate(faces):
            sel = which == i
            pts[sel, axis] = self.centre[axis] + sign * self.half[axis]
        return pts

    def area(self) -> float:
        return float(sum(f[0] for f in self.faces()))

    def contains(self, points: np.ndarray, margin: float = 1e-6) -> np.ndarray:
        """Strictly inside (by more than ``margin``), (N,) bool."""
        return (np.abs(points - self.centre) < self.half - margin).all(axis=1)

    def transformed(self, shift: np.ndarray, scale: float) -> Box:
        return replace(self, centre=(self.centre + shift) * scale, half=self.half * scale)


@dataclass(frozen=True)
class Cylinder:
    """Capped cylinder along world axis ``axis`` (0, 1, 2) with ``centre``, ``radius`` and ``half_length``."""

    centre: np.ndarray
    axis: int
    radius: float
    half_length: float
    label: int
    colour: np.ndarray

    @property
    def _others(self) -> tuple[int, int]:
        a, b = [k for k in range(3) if k != self.axis]
        return a, b

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First hit of rays ``(R, 3)``: side (quadratic) or caps (planes); t (R,) inf on miss, normals (R, 3)."""
        a, b = self._others
        o = origins - self.centre
        ox, oy, oz = o[:, a], o[:, b], o[:, self.axis]
        dx, dy, dz = dirs[:, a], dirs[:, b], dirs[:, self.axis]
        qa = dx * dx + dy * dy
        qb = 2.0 * (ox * dx + oy * dy)
        qc = ox * ox + oy * oy - self.radius**2
        disc = qb * qb - 4.0 * qa * qc
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-qb - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * qa)
            ok_side = (
                (disc >= 0) & (qa > _EPS) & (t_side > _EPS) & (np.abs(oz + t_side * dz) <= self.half_length)
            )
            t_side = np.where(ok_side, t_side, np.inf)
            t_caps = []
            for sign in (-1.0, 1.0):
                tc = (sign * self.half_length - oz) / dz
                px, py = ox + tc * dx, oy + tc * dy
                ok = np.isfinite(tc) & (tc > _EPS) & (px * px + py * py <= self.radius**2)
                t_caps.append(np.where(ok, tc, np.inf))
        stack = np.stack([t_side, *t_caps])  # (3, R): side, lower cap, upper cap
        which = np.argmin(stack, axis=0)
        t = stack[which, np.arange(len(dirs))]
        normals = np.zeros_like(dirs)
        side = which == 0
        normals[side, a] = (ox + t_side * dx)[side] / self.radius
        normals[side, b] = (oy + t_side * dy)[side] / self.radius
        normals[which == 1, self.axis] = -1.0
        normals[which == 2, self.axis] = 1.0
        return t, normals

    def area(self) -> float:
        return float(2 * np.pi * self.radius * 2 * self.half_length + 2 * np.pi * self.radius**2)

    def sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points uniform by area on side and caps, (n, 3)."""
        a, b = self._others
        side_area = 2 * np.pi * self.radius * 2 * self.half_length
        cap_area = np.pi * self.radius**2
        which = rng.choice(3, size=n, p=np.array([side_area, cap_area, cap_area]) / self.area())
        phi = rng.uniform(0.0, 2 * np.pi, size=n)
        rad = np.where(which == 0, self.radius, self.radius * np.sqrt(rng.uniform(0.0, 1.0, size=n)))
        along = np.where(
            which == 0,
            rng.uniform(-self.half_length, self.half_length, size=n),
            np.where(which == 1, -self.half_length, self.half_length),
        )
        pts = np.empty((n, 3))
        pts[:, a] = rad * np.cos(phi)
        pts[:, b] = rad * np.sin(phi)
        pts[:, self.axis] = along
        return pts + self.centre

    def contains(self, points: np.ndarray, margin: float = 1e-6) -> np.ndarray:
        a, b = self._others
        p = points - self.centre
        radial = np.sqrt(p[:, a] ** 2 + p[:, b] ** 2)
        return (radial < self.radius - margin) & (np.abs(p[:, self.axis]) < self.half_length - margin)

    def transformed(self, shift: np.ndarray, scale: float) -> Cylinder:
        return replace(
            self,
            centre=(self.centre + shift) * scale,
            radius=self.radius * scale,
            half_length=self.half_length * scale,
        )


Primitive = Box | Cylinder


def box_from_bounds(lo, hi, label: int, colour: np.ndarray) -> Box:
    """A :class:`Box` spanning corners ``lo`` and ``hi`` (each (3,))."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    return Box((lo + hi) / 2, (hi - lo) / 2, label, colour)


def bounds(prims: list[Primitive]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounding box ``(lo, hi)`` of a list of primitives."""
    los, his = [], []
    for p in prims:
        if isinstance(p, Box):
            los.append(p.centre - p.half)
            his.append(p.centre + p.half)
        else:
            ext = np.full(3, p.radius)
            ext[p.axis] = p.half_length
            los.append(p.centre - ext)
            his.append(p.centre + ext)
    return np.min(los, axis=0), np.max(his, axis=0)
