"""Linear VAE toolkit and the conditioning core shared by every MR-VAE in mrvae."""
from .conditioning import BetaRange, BetaRangeError, Gate, HyperMLP, sigmoid_gate, sqrt_gate

__all__ = ["BetaRange", "BetaRangeError", "Gate", "HyperMLP", "sigmoid_gate", "sqrt_gate"]
