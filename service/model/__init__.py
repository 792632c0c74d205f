"""Building on-device-trainable models with TensorFlow (the tutorial's pipeline).

Nothing here is used to serve: the service loads any `.tflite` with the right signatures.
Import the submodules directly; importing this package does not import TensorFlow.
"""
