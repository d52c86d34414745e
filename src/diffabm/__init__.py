"""diffabm: reproducible calibration studies of differentiable agent-based models."""

__version__ = "0.1.0"
