"""Serving stage: onnxruntime inference behind gRPC. Never imports TensorFlow."""
