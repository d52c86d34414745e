"""Differentiable agent-based models."""
