"""featurenerf: generalizable NeRFs that distil 2D foundation-model features into 3D feature fields."""

__version__ = "0.1.0"
