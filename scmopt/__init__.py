"""scmopt: compile trained ONNX networks into sparse approximate causal abstractions."""

__version__ = "0.1.0"
