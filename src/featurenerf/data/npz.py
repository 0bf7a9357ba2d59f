"""Read ``.npz`` archives without trusting them: plain arrays as numpy does, object arrays through a
restricted unpickler.

The FeatureNeRF release stores ragged data (per-view 2D keypoint lists, per-view feature dictionaries)
as numpy *object* arrays, which ``np.load`` can only read with ``allow_pickle=True`` — that runs any
code the file names. :func:`load_npz` instead unpickles object arrays with an unpickler that resolves
only numpy's array-rebuilding functions, so a hostile file fails with :class:`DataError` instead of
executing anything.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from featurenerf.data.srn import DataError

# The only globals an object array of arrays, numbers and dicts needs. numpy >= 2 pickles name
# ``numpy._core``, older releases ``numpy.core``; both resolve to the running numpy's functions.
_ALLOWED = {
    ("multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
    ("multiarray", "scalar"): np.float64(0).__reduce__()[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        short = "numpy" if module == "numpy" else module.rsplit(".", 1)[-1]
        if module.split(".")[0] == "numpy" and (short, name) in _ALLOWED:
            return _ALLOWED[(short, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_member(data: bytes) -> np.ndarray:
    fp = io.BytesIO(data)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    if not dtype.hasobject:
        fp.seek(0)
        return np.lib.format.read_array(fp, allow_pickle=False)
    array = _ArrayUnpickler(fp).load()
    if not isinstance(array, np.ndarray):
        raise pickle.UnpicklingError(f"expected an array, found {type(array).__name__}")
    return array


def load_npz(path: str | Path, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` archive by name (all of them, or only ``keys``), object arrays included.

    Raises:
        DataError: one line naming the file: missing, not an npz, a missing key, or an object array that
            holds anything but numbers, arrays, lists and dicts.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        with zipfile.ZipFile(path) as z:
            names = {n[: -len(".npy")]: n for n in z.namelist() if n.endswith(".npy")}
            wanted = keys or tuple(names)
            absent = [k for k in wanted if k not in names]
            if absent:
                found = ", ".join(sorted(names)) or "none"
                raise DataError(f"{path}: malformed, needs array(s) {', '.join(absent)} (found {found})")
            return {k: _read_member(z.read(names[k])) for k in wanted}
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz archive ({err})") from err
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: unreadable array ({err})") from err
