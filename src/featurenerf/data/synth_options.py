"""``data synth`` option values that command lines offer as choices.

Kept apart from :mod:`featurenerf.data.synth` (whose import pulls in the generator, numpy and torch) so
that ``featurenerf data synth --help`` and ``featurenerf results --help`` stay fast.
"""

#: ``train_cameras`` choices: every split shares one camera set, or training objects each draw their own.
TRAIN_CAMERAS = ("shared", "per_object")
