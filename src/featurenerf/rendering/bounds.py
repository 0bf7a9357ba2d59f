"""Scene bounds for empty-space skipping: where the field may have density.

SRN objects are normalised to the unit cube around the origin, so a sphere or a box around the origin
holds every surface; samples outside it are known to be empty and never reach the MLP at render time.
Both classes broadcast over leading dimensions and work in world units.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Sphere:
    """A ball of ``radius`` around ``center``."""

    radius: float
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if not self.radius > 0:
            raise ValueError(f"sphere radius must be positive, got {self.radius}")

    def contains(self, xyz: Tensor) -> Tensor:
        """(..., 3) points → (...) bool, True inside or on the sphere."""
        c = xyz.new_tensor(self.center)
        return (xyz - c).pow(2).sum(-1) <= self.radius**2


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``[lo, hi]``."""

    lo: tuple[float, float, float] = (-0.5, -0.5, -0.5)
    hi: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if not all(a < b for a, b in zip(self.lo, self.hi)):
            raise ValueError(f"box needs lo < hi on every axis, got lo={self.lo} hi={self.hi}")

    def contains(self, xyz: Tensor) -> Tensor:
        """(..., 3) points → (...) bool, True inside or on the box."""
        return ((xyz >= xyz.new_tensor(self.lo)) & (xyz <= xyz.new_tensor(self.hi))).all(-1)
