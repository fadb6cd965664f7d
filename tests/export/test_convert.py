"""tf2onnx conversion: contract names, dtypes, dynamic batch, pinned opset, metadata, round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from breakout_dqn import contract


def test_export_of_a_fresh_model_round_trips(keras_model_path: Path, onnx_model_path: Path) -> None:
    import onnx

    from breakout_dqn.export.convert import OPSET
    from breakout_dqn.files import file_sha256
    from breakout_dqn.onnx_model import OnnxPolicy
    from breakout_dqn.training.model import load_q_network

    proto = onnx.load(str(onnx_model_path))
    onnx.checker.check_model(proto)
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == OPSET == 17
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "frames" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and [d.dim_value for d in dims[1:]] == [84, 84, 4]
    assert out.name == "q_values" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in out.type.tensor_type.shape.dim[1:]] == [4]
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert set(contract.REQUIRED_METADATA) <= set(metadata)
    assert metadata[contract.META_SOURCE_SHA256] == file_sha256(keras_model_path)
    assert metadata[contract.META_ACTIONS] == "NOOP,FIRE,RIGHT,LEFT"

    model, policy = load_q_network(keras_model_path), OnnxPolicy(onnx_model_path)
    rng = np.random.default_rng(0)
    for batch in (1, 37):  # dynamic batch
        frames = rng.integers(0, 256, (batch, 84, 84, 4), dtype=np.uint8)
        q_onnx, q_keras = policy.q_values(frames), np.asarray(model(frames, training=False))
        assert q_onnx.shape == (batch, 4) and q_onnx.dtype == np.float32
        np.testing.assert_allclose(q_onnx, q_keras, atol=1e-5, rtol=1e-5)
        assert (policy.act(frames) == q_keras.argmax(axis=1)).all()


def test_metadata_records_training_steps_frames_and_score() -> None:
    from breakout_dqn.export.convert import contract_metadata

    metadata = contract_metadata("ab" * 32, train_steps=1000, eval_score=12.345)
    assert metadata[contract.META_TRAIN_STEPS] == "1000" and metadata[contract.META_TRAIN_FRAMES] == "4000"
    assert metadata[contract.META_EVAL_SCORE] == "12.35"
    assert contract.META_EVAL_SCORE not in contract_metadata("ab" * 32)
