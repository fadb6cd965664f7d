"""The shipped model (``breakout-dqn.onnx``), installed as package data of ``breakout_dqn.models``."""
