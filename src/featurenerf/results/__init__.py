"""``make results``: the study that trains, evaluates and reports FeatureNeRF against its baselines.

Modules, one job each: :mod:`.plan` (which fits and evaluations, as commands), :mod:`.prepare` (data and
teacher cache of a category), :mod:`.runner` (parallel, resumable execution), :mod:`.bootstrap`
(intervals over pairs pooled over seeds), :mod:`.report` (``docs/results.md`` / ``.json``) and
:mod:`.cli` (the command line).
"""

from .bootstrap import Interval, bootstrap_interval, bootstrap_replicates

__all__ = ["Interval", "bootstrap_interval", "bootstrap_replicates"]
