"""What ``torch.compile`` adds to a module, in one place.

``torch.compile(module)`` returns an ``OptimizedModule`` that holds the original as ``_orig_mod``; its
state-dict keys gain a ``_orig_mod.`` level. Code that needs the plain module, or keys that fit an
uncompiled one, goes through these helpers instead of spelling the private attribute itself.
"""

from __future__ import annotations

from torch import nn

_WRAPPED = "_orig_mod"


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` is the wrapper ``torch.compile`` returns (not the module it wraps)."""
    return hasattr(module, _WRAPPED)


def unwrap_compiled(module: nn.Module) -> nn.Module:
    """The plain module behind a ``torch.compile`` wrapper; ``module`` itself when it is not compiled."""
    return getattr(module, _WRAPPED, module)


def uncompiled_key(key: str) -> str:
    """A state-dict key without the compile wrapper's level (``"mlp._orig_mod.fc.weight"`` → ``"mlp.fc.weight"``)."""
    return key.replace(f".{_WRAPPED}.", ".").removeprefix(f"{_WRAPPED}.")
