"""The one ONNX loader: what it refuses (with one line saying why) and what a loaded model answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from breakout_dqn import contract
from breakout_dqn.files import file_sha256
from breakout_dqn.onnx_model import (
    ModelLoadError,
    OnnxPolicy,
    check_metadata_contract,
    check_session_contract,
    load_session,
    run_q_values,
    session_metadata,
)

SHIPPED = Path(__file__).parents[1] / "models" / "breakout-dqn.onnx"


def channel_means(path: Path, elem_type: int | None = None, shape: list[Any] | None = None) -> Path:
    """An ONNX graph whose Q-value of action ``a`` is the mean of channel ``a`` of the stack.

    With ``elem_type``/``shape`` the input is declared otherwise (to break the contract).
    """
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["frames"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x"], ["q_values"], axes=[1, 2], keepdims=0)]
    frames = helper.make_tensor_value_info("frames", elem_type or TensorProto.UINT8, shape or ["N", 84, 84, 4])
    graph = helper.make_graph(nodes, "channel_means", [frames],
                              [helper.make_tensor_value_info("q_values", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def contract_metadata() -> dict[str, str]:
    values = {
        contract.META_CONTRACT: contract.CONTRACT_VERSION,
        contract.META_ACTIONS: ",".join(contract.ACTION_MEANINGS),
        contract.META_SERVE_POLICY: contract.SERVE_POLICY,
    }
    return {key: values.get(key, "x") for key in contract.REQUIRED_METADATA}


def test_a_loaded_model_answers_q_values_and_greedy_actions(tmp_path: Path) -> None:
    path = channel_means(tmp_path / "model.onnx")
    policy = OnnxPolicy(path)
    frames = np.zeros((3, 84, 84, 4), np.uint8)
    for row, action in enumerate((1, 3, 2)):
        frames[row, :, :, action] = 200
    q_values = policy.q_values(frames)
    assert q_values.dtype == np.float32 and q_values.shape == (3, 4)
    np.testing.assert_allclose(q_values, frames.mean(axis=(1, 2)), rtol=1e-6)
    actions = policy.act(frames)
    assert actions.dtype == np.int32 and actions.tolist() == [1, 3, 2]
    np.testing.assert_array_equal(run_q_values(load_session(path), frames), q_values)  # the same call


def test_frames_that_break_the_contract_are_refused_before_inference(tmp_path: Path) -> None:
    policy = OnnxPolicy(channel_means(tmp_path / "model.onnx"))
    with pytest.raises(contract.ContractError, match="must be uint8"):
        policy.q_values(np.zeros((1, 84, 84, 4), np.float32))
    with pytest.raises(contract.ContractError, match="channels last"):
        policy.q_values(np.zeros((1, 4, 84, 84), np.uint8))


def test_the_shipped_model_loads_with_its_metadata_and_version() -> None:
    policy = OnnxPolicy(SHIPPED)
    check_metadata_contract(policy.metadata)
    assert policy.metadata == session_metadata(policy.session)
    assert policy.sha256 == file_sha256(SHIPPED)
    assert policy.version == f"{policy.metadata[contract.META_VERSION]}+{policy.sha256[:12]}"
    assert policy.act(np.zeros((2, 84, 84, 4), np.uint8)).shape == (2,)


@pytest.mark.parametrize("kind", ["missing", "garbage", "empty"])
def test_an_unloadable_file_is_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "model.onnx"
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "empty":
        path.write_bytes(b"")
    expected = "model file not found" if kind == "missing" else "cannot load ONNX model"
    for load in (load_session, OnnxPolicy):
        with pytest.raises(ModelLoadError, match=expected) as caught:
            load(path)
        assert "\n" not in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize(("elem_type", "shape", "message"), [
    (1, ["N", 84, 84, 4], "must be uint8"),  # float32 input
    (2, ["N", 4, 84, 84], "channels last"),  # uint8, channels first
])
def test_a_graph_that_breaks_the_contract_is_refused(tmp_path: Path, elem_type: int, shape: list[Any],
                                                     message: str) -> None:
    path = channel_means(tmp_path / "model.onnx", elem_type, shape)
    with pytest.raises(ModelLoadError, match=message):
        check_session_contract(load_session(path))  # loads: the file is valid ONNX
    with pytest.raises(ModelLoadError, match=message):
        OnnxPolicy(path)


@pytest.mark.parametrize(("change", "message"), [
    ({contract.META_CONTRACT: None}, "missing breakout_dqn.contract"),
    ({contract.META_SERVE_POLICY: "agent-presses-fire"}, "breakout_dqn.serve_policy='agent-presses-fire'"),
    ({contract.META_ACTIONS: "NOOP,FIRE,LEFT,RIGHT"}, "breakout_dqn.action_meanings"),
    ({contract.META_CONTRACT: "frames-f32-nchw/v0"}, "does not match"),
])
def test_metadata_that_breaks_the_contract_is_refused(change: dict[str, str | None], message: str) -> None:
    metadata = contract_metadata()
    check_metadata_contract(metadata)
    for key, value in change.items():
        if value is None:
            del metadata[key]
        else:
            metadata[key] = value
    with pytest.raises(ModelLoadError, match=message):
        check_metadata_contract(metadata)
