"""An exported ONNX Q-network on onnxruntime: loading, the contract checks, and the Q-value call.

Serving, ``verify``, the export's parity gate and ``evaluate`` all load models here, so a model
one of them accepts is a model every one of them accepts. onnxruntime is imported lazily (the
``serve`` extra installs it); TensorFlow never.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from breakout_dqn import contract
from breakout_dqn.errors import ModelLoadError, one_line
from breakout_dqn.files import file_sha256

__all__ = ["ModelLoadError", "OnnxPolicy", "check_metadata_contract", "metadata_problems", "run_q_values"]


def session_options(intra_op_threads: int | None = None) -> Any:
    """Options tuned for small CPU batches: few threads, no spinning between requests."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads or min(2, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning burns a core while idle and starves the gRPC threads on a small machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_session(path: str | Path, intra_op_threads: int | None = None) -> Any:
    """An onnxruntime CPU session for ``path``; ModelLoadError with a one-line reason.

    Checks only that the file exists and onnxruntime can load it; the contract checks are
    ``check_session_contract`` and ``check_metadata_contract``.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(intra_op_threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise ModelLoadError(f"cannot load ONNX model {path}: {one_line(error)}") from None


def session_metadata(session: Any) -> dict[str, str]:
    """The model's ONNX ``metadata_props`` (keys in ``breakout_dqn.contract``)."""
    return dict(session.get_modelmeta().custom_metadata_map)


def check_session_contract(session: Any) -> None:
    """Raise ModelLoadError unless the graph maps uint8 ``frames [N,84,84,4]`` to ``q_values [N,4]``."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != contract.INPUT_NAME:
        raise ModelLoadError(f"model must have one input named {contract.INPUT_NAME!r}, got {[i.name for i in inputs]}")
    if inputs[0].type != "tensor(uint8)":
        raise ModelLoadError(f"input {contract.INPUT_NAME!r} must be uint8, got {inputs[0].type}")
    if list(inputs[0].shape[1:]) != list(contract.STACK_SHAPE):
        raise ModelLoadError(
            f"input {contract.INPUT_NAME!r} must be [N,84,84,4] (channels last), got {inputs[0].shape}"
        )
    names = [o.name for o in outputs]
    if contract.OUTPUT_NAME not in names:
        raise ModelLoadError(f"model must have an output named {contract.OUTPUT_NAME!r}, got {names}")
    output = outputs[names.index(contract.OUTPUT_NAME)]
    if output.type != "tensor(float)" or list(output.shape[1:]) != [contract.NUM_ACTIONS]:
        raise ModelLoadError(f"output {contract.OUTPUT_NAME!r} must be float32 [N,4], got {output.type} {output.shape}")


def metadata_problems(metadata: dict[str, str]) -> list[str]:
    """What keeps a model's ONNX metadata from declaring this package's contract (empty: nothing)."""
    problems = [f"missing {key}" for key in contract.REQUIRED_METADATA if not metadata.get(key)]
    problems += [f"{key}={metadata[key]!r} does not match this package's {value!r}"
                 for key, value in contract.EXPECTED_METADATA.items() if metadata.get(key) and metadata[key] != value]
    return problems


def check_metadata_contract(metadata: dict[str, str]) -> None:
    """Raise ModelLoadError unless the ONNX metadata declares this package's contract.

    A server refuses such a model at start: its frames, actions or serve policy would not be
    the ones the clients of this contract send and expect.
    """
    problems = metadata_problems(metadata)
    if problems:
        raise ModelLoadError(f"model metadata: {'; '.join(problems)} (export it with `breakout-dqn export`, "
                             f"contract {contract.CONTRACT_VERSION})")


def run_q_values(session: Any, frames: np.ndarray) -> np.ndarray:
    """One forward pass: uint8 ``frames [N,84,84,4]`` (checked) -> float32 ``q_values [N,4]``."""
    contract.check_frames(frames)
    return session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: frames})[0]


def model_version(sha256: str, metadata: dict[str, str]) -> str:
    """The version a server reports: the package version from the metadata plus the file's hash."""
    return f"{metadata.get(contract.META_VERSION, 'unknown')}+{sha256[:12]}"


class OnnxPolicy:
    """Loads ``MODEL.onnx``; ``q_values(frames)`` and greedy ``act(frames)`` on uint8 [N,84,84,4].

    Refuses (ModelLoadError) a file that is missing, not ONNX, or whose graph breaks the
    contract; the metadata is checked by whoever needs it (``check_metadata_contract``).
    """

    def __init__(self, path: str | Path, intra_op_threads: int | None = None):
        path = Path(path)
        self.session = load_session(path, intra_op_threads)
        self.path = path
        self.metadata = session_metadata(self.session)
        check_session_contract(self.session)
        self.sha256 = file_sha256(path)

    @property
    def version(self) -> str:
        """``<package version>+<first 12 hex chars of the file's sha256>``, e.g. ``0.1.0+3f2a9c1b7d4e``."""
        return model_version(self.sha256, self.metadata)

    def q_values(self, frames: np.ndarray) -> np.ndarray:
        """Float32 Q-values ``[N,4]`` for uint8 ``frames [N,84,84,4]``."""
        return run_q_values(self.session, frames)

    def act(self, frames: np.ndarray) -> np.ndarray:
        """Greedy actions, int32 ``[N]``."""
        return np.argmax(self.q_values(frames), axis=1).astype(np.int32)
