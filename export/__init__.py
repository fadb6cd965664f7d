"""Export stage: Keras Q-network -> ONNX (tf2onnx), parity gate, and model validation for CI."""
