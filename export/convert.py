"""Keras Q-network -> ONNX with tf2onnx: pinned opset, named uint8 input, dynamic batch."""

from __future__ import annotations

from breakout_dqn import __version__, contract

__all__ = ["OPSET", "contract_metadata", "keras_to_onnx"]

OPSET = 17


def contract_metadata(source_sha256: str, train_steps: int | None = None,
                      eval_score: float | None = None) -> dict[str, str]:
    """The ``metadata_props`` every exported model carries (keys in ``breakout_dqn.contract``)."""
    metadata = {
        contract.META_CONTRACT: contract.CONTRACT_VERSION,
        contract.META_PREPROCESSING: contract.PREPROCESSING,
        contract.META_ACTIONS: ",".join(contract.ACTION_MEANINGS),
        contract.META_SERVE_POLICY: contract.SERVE_POLICY,
        contract.META_SOURCE_SHA256: source_sha256,
        contract.META_VERSION: __version__,
    }
    if train_steps is not None:
        metadata[contract.META_TRAIN_STEPS] = str(int(train_steps))
        metadata[contract.META_TRAIN_FRAMES] = str(int(train_steps) * contract.FRAME_SKIP)
    if eval_score is not None:
        metadata[contract.META_EVAL_SCORE] = f"{eval_score:.2f}"
    return metadata


def keras_to_onnx(model, metadata: dict[str, str]):
    """Convert a loaded Keras Q-network; returns an ``onnx.ModelProto`` with ``metadata`` attached."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    signature = (tf.TensorSpec((None, *contract.STACK_SHAPE), tf.uint8, name=contract.INPUT_NAME),)
    model_proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
    # tf2onnx names the output after the Keras layer/signature; pin it to the contract's name.
    output = model_proto.graph.output[0]
    if output.name != contract.OUTPUT_NAME:
        for node in model_proto.graph.node:
            node.output[:] = [contract.OUTPUT_NAME if name == output.name else name for name in node.output]
        output.name = contract.OUTPUT_NAME
    onnx.helper.set_model_props(model_proto, metadata)
    onnx.checker.check_model(model_proto)
    return model_proto
