"""Breakout DQN: train a deep Q-network on Atari Breakout, export it to ONNX, serve it over gRPC."""

__version__ = "0.3.0"
