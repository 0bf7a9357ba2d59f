"""A least-recently-used store of tensors, bounded in bytes (decoded images, rendered descriptors)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from torch import Tensor


def tensor_bytes(value: Any) -> int:
    """Bytes held by a tensor, or by the tensors of a dict / tuple / list of tensors."""
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    items = value.values() if isinstance(value, dict) else value
    return sum(t.numel() * t.element_size() for t in items)


class TensorLRU:
    """Values made once by ``make()`` and kept while they fit in ``max_bytes`` (least recently used out
    first; a value larger than the budget is returned but not kept; 0 keeps nothing).

    Attributes:
        bytes: bytes held now.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value stored under ``key``, or ``make()``'s (stored when it fits)."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        size = tensor_bytes(value)
        if size <= self.max_bytes:
            self._items[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= tensor_bytes(old)
        return value

    def clear(self) -> None:
        """Forget every stored value."""
        self._items.clear()
        self.bytes = 0
