"""A small PLY writer for point clouds (vertices only), binary little-endian or ASCII.

PLY (Turk, 1994) is a text header naming the ``vertex`` element and its typed properties, then the data.
Standard viewers (MeshLab, CloudCompare, Open3D, Blender) read ``x y z`` as positions and
``red green blue`` (uchar) as colours; extra properties (here the PCA colours) are kept as scalar fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from featurenerf.io import atomic_write

#: numpy dtype → PLY type name (the subset a point cloud needs).
_PLY_TYPES = {
    np.dtype(np.int8): "char",
    np.dtype(np.uint8): "uchar",
    np.dtype(np.int16): "short",
    np.dtype(np.uint16): "ushort",
    np.dtype(np.int32): "int",
    np.dtype(np.uint32): "uint",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}


def ply_header(properties: Mapping[str, np.ndarray], count: int, binary: bool = True) -> str:
    """The header text (ending in ``end_header\\n``) for ``count`` vertices with these properties."""
    fmt = "binary_little_endian" if binary else "ascii"
    lines = ["ply", f"format {fmt} 1.0", "comment written by featurenerf", f"element vertex {count}"]
    for name, values in properties.items():
        if np.dtype(values.dtype) not in _PLY_TYPES:
            raise ValueError(f"PLY property {name!r}: unsupported dtype {values.dtype}")
        if not name.isidentifier():
            raise ValueError(f"PLY property name {name!r} must be a single word")
        lines.append(f"property {_PLY_TYPES[np.dtype(values.dtype)]} {name}")
    lines.append("end_header")
    return "\n".join(lines) + "\n"


def write_ply(path: str | Path, properties: Mapping[str, np.ndarray], binary: bool = True) -> Path:
    """Write a vertex-only PLY atomically.

    Args:
        properties: name → (N,) array, in file order; the dtype picks the PLY type (float32 → float,
            uint8 → uchar, ...). A point cloud needs ``x``, ``y``, ``z`` at least.
        binary: binary little-endian (compact, default) or ASCII (human-readable).
    """
    arrays = {k: np.asarray(v) for k, v in properties.items()}
    lengths = {v.shape for v in arrays.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"PLY properties must be 1-D arrays of one length, got shapes {sorted(lengths)}")
    count = next(iter(lengths))[0]
    header = ply_header(arrays, count, binary)
    path = Path(path)
    with atomic_write(path, "wb") as f:
        f.write(header.encode("ascii"))
        if binary:
            record = np.dtype([(k, v.dtype.newbyteorder("<")) for k, v in arrays.items()])
            table = np.empty(count, dtype=record)
            for k, v in arrays.items():
                table[k] = v
            f.write(table.tobytes())
        else:
            columns = [np.char.mod("%.9g" if v.dtype.kind == "f" else "%d", v) for v in arrays.values()]
            rows = columns[0]  # "%.9g" round-trips float32 exactly
            for col in columns[1:]:
                rows = np.char.add(np.char.add(rows, " "), col)
            if count:
                f.write(("\n".join(rows.tolist()) + "\n").encode("ascii"))
    return path
