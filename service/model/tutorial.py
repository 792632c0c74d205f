"""The tutorial's published figures ("On-Device Training with TensorFlow Lite"): our reference."""

PRE_TRAINING_LOSSES: dict[int, float] = {
    10: 0.428,
    20: 0.378,
    30: 0.344,
    40: 0.317,
    50: 0.299,
    60: 0.283,
    70: 0.266,
    80: 0.252,
    90: 0.240,
    100: 0.230,
}
"""Loss of the last batch after N epochs of pre-training in TensorFlow (batch 100, SGD 0.01)."""

ON_DEVICE_LOSSES: dict[int, float] = {10: 0.223, 20: 0.216, 30: 0.210, 40: 0.204, 50: 0.198}
"""Loss after N more epochs through the converted model's ``train`` signature."""
