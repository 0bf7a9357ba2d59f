"""``python -m featurenerf.results``: see :mod:`featurenerf.results.cli`."""

import sys

from .cli import main

sys.exit(main())
