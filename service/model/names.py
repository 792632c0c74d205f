"""The names our models' strategy signatures take (``trainable.OnDeviceModule``), for the service to feed
them without importing TensorFlow."""

GLOBAL_PREFIX = "global_"
"""``train_prox`` takes the round's global weights as ``global_<weight>``, and ``mu``."""
CORRECTION_PREFIX = "correction_"
"""``train_scaffold`` takes SCAFFOLD's correction ``c - c_i`` as ``correction_<weight>``."""
