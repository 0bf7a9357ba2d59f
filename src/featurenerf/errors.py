"""featurenerf's error family: every error the library raises on purpose, for bad input it can name.

Each message is one line that names the file or option and the problem (and, where there is one, what
to do), so the CLI prints it as it is: ``run_lightning`` and the subcommands catch
:class:`FeatureNeRFError` and print ``featurenerf: error: <message>``.

::

    FeatureNeRFError
    ├── DataError            a dataset, annotation or cache file is missing or malformed (ValueError)
    │   ├── CacheError       a teacher-feature cache file is missing, stale or corrupt
    │   └── CheckpointError  a checkpoint (model or teacher) cannot be read or would need unpickling code
    │       └── EncoderWeightsError (nerf/encoder.py)  image-encoder weights missing, unreadable or of another layout
    ├── TeacherError         a teacher cannot be built
    │   └── WeightsNotFoundError   its weights are neither on disk nor obtainable (FileNotFoundError)
    ├── ConfigError          an option or command line that cannot work (ValueError)
    │   ├── UnknownNameError a name that is not registered; lists the registered ones (KeyError)
    │   └── PlanError (results/runner.py)  a finished run disagrees with the requested budget
    └── TrainingDiverged     too many steps had non-finite losses or gradients (RuntimeError)

Each also derives from the built-in type it replaced, so ``except ValueError`` (etc.) keeps working.
The old import places (``featurenerf.data.srn.DataError``, ``featurenerf.checkpointing.CheckpointError``,
``featurenerf.registry.UnknownNameError``, ...) re-export these classes.
"""

from __future__ import annotations

from pathlib import Path


class FeatureNeRFError(Exception):
    """Base of the family: a one-line message naming the file or option and the problem."""

    def __str__(self) -> str:  # KeyError would quote its message; every member prints it plain
        return str(self.args[0]) if self.args else ""


class DataError(FeatureNeRFError, ValueError):
    """A dataset file is missing or malformed; the message names the file and the problem in one line."""


class CacheError(DataError):
    """A cache file is missing, stale or corrupt; the message names the file and the problem."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


class CheckpointError(DataError):
    """A checkpoint (the model's or a teacher's) that cannot be read, or would need unpickling arbitrary
    objects; names the file. A data file like any other: a ``DataError``, as it always was."""


class TeacherError(FeatureNeRFError):
    """A teacher that cannot be built or run as configured."""


class WeightsNotFoundError(TeacherError, FileNotFoundError):
    """Teacher weights are neither on disk nor obtainable; the message says what to pass."""


class ConfigError(FeatureNeRFError, ValueError):
    """An option, a combination of options or a command line that cannot work."""


class UnknownNameError(ConfigError, KeyError):
    """Raised for a name that is not registered; the message lists the registered names."""


class TrainingDiverged(FeatureNeRFError, RuntimeError):
    """Too many steps had non-finite losses or gradients."""
