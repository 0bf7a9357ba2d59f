"""featurenerf: generalizable NeRFs that distil 2D foundation-model features into 3D feature fields.

``featurenerf.load(ckpt)`` returns a trained model as a plain torch module and
``featurenerf.load_view(image, net)`` prepares an input image (see :mod:`featurenerf.api`). Both are
imported on first use, so ``import featurenerf`` stays free of torch.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "load", "load_view"]

_LAZY = {"load": "featurenerf.api", "load_view": "featurenerf.api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featurenerf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
