"""The contract that binds training, export and serving: one place, numpy only.

Model input ``frames``: uint8 ``[N, 84, 84, 4]``, channels last, the 4 most recent
preprocessed frames oldest first. Each frame is the max of the last two raw frames of a
4-frame action repeat, converted to grayscale and resized to 84x84 (ALE's native vector
environment does exactly this: each 210x160 screen in ALE's grayscale, then the pixel-wise max
of the two, then OpenCV's INTER_AREA resize; ``breakout_dqn.serving.screens`` does the same in
numpy, bit for bit). Scaling to [0, 1] happens inside the model.

Model output ``q_values``: float32 ``[N, 4]`` in ALE's minimal action order for Breakout.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from breakout_dqn.errors import ContractError

__all__ = ["ContractError"]  # raised here; defined with the other errors

INPUT_NAME = "frames"
OUTPUT_NAME = "q_values"
FRAME_HEIGHT = 84
FRAME_WIDTH = 84
STACK_SIZE = 4
FRAME_SKIP = 4
STACK_SHAPE = (FRAME_HEIGHT, FRAME_WIDTH, STACK_SIZE)
STACK_BYTES = FRAME_HEIGHT * FRAME_WIDTH * STACK_SIZE  # 28,224 bytes per stack
# The raw screens PlayGame takes: ALE's native 210x160, as RGB [210,160,3] or grayscale [210,160] uint8.
SCREEN_HEIGHT = 210
SCREEN_WIDTH = 160
SCREEN_RGB_BYTES = SCREEN_HEIGHT * SCREEN_WIDTH * 3  # 100,800 bytes
SCREEN_GRAYSCALE_BYTES = SCREEN_HEIGHT * SCREEN_WIDTH  # 33,600 bytes
MAX_SCREENS_PER_FRAME = FRAME_SKIP  # the screens of one action repeat
INPUT_DTYPE = np.uint8
OUTPUT_DTYPE = np.float32
ACTION_MEANINGS = ("NOOP", "FIRE", "RIGHT", "LEFT")
NUM_ACTIONS = len(ACTION_MEANINGS)
FIRE_ACTION = ACTION_MEANINGS.index("FIRE")
GAME = "breakout"

PREPROCESSING = (
    "ALE Breakout, minimal action set; action repeat 4 (1 agent step = 4 frames); "
    "each frame = max of the last two raw frames of the repeat, grayscale, resized to 84x84; "
    "stack of the 4 most recent frames, oldest first, zeros before an episode's first frame; "
    "uint8 [N,84,84,4] channels last, scaled to [0,1] inside the model; "
    "FIRE is pressed at reset and after every lost life (the serve policy)."
)
SERVE_POLICY = "fire-after-life-loss"

# Keys of the metadata carried in ONNX metadata_props and returned by GetModelInfo.
META_PREPROCESSING = "breakout_dqn.preprocessing"
META_ACTIONS = "breakout_dqn.action_meanings"
META_SERVE_POLICY = "breakout_dqn.serve_policy"
META_TRAIN_STEPS = "breakout_dqn.train_agent_steps"
META_TRAIN_FRAMES = "breakout_dqn.train_frames"
META_EVAL_SCORE = "breakout_dqn.eval_score"
META_SOURCE_SHA256 = "breakout_dqn.source_sha256"
META_VERSION = "breakout_dqn.package_version"
META_CONTRACT = "breakout_dqn.contract"
# Keras Q-values on fixed probe stacks, written by export and re-checked by verify (~10 KB JSON).
META_FINGERPRINT = "breakout_dqn.parity_fingerprint"
CONTRACT_VERSION = "frames-u8-nhwc-84x84x4/q-f32-4/v1"
REQUIRED_METADATA = (
    META_PREPROCESSING,
    META_ACTIONS,
    META_SERVE_POLICY,
    META_SOURCE_SHA256,
    META_VERSION,
    META_CONTRACT,
)


# What a stage asks of a model: the metadata values it must carry (ONNX metadata_props).
EXPECTED_METADATA = {
    META_CONTRACT: CONTRACT_VERSION,
    META_ACTIONS: ",".join(ACTION_MEANINGS),
    META_SERVE_POLICY: SERVE_POLICY,
}

QFn = Callable[[np.ndarray], np.ndarray]
"""Maps uint8 frame stacks ``[N,84,84,4]`` to float32 Q-values ``[N,4]``."""


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Return ``frames`` as a uint8 ``[N,84,84,4]`` array or raise ContractError."""
    if not isinstance(frames, np.ndarray):
        raise ContractError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != INPUT_DTYPE:
        raise ContractError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[1:] != STACK_SHAPE:
        raise ContractError(
            f"frames must have shape [N,{FRAME_HEIGHT},{FRAME_WIDTH},{STACK_SIZE}] "
            f"(channels last), got {list(frames.shape)}"
        )
    if frames.shape[0] < 1:
        raise ContractError("frames must hold at least one stack")
    return frames


def frames_from_bytes(payload: bytes) -> np.ndarray:
    """Decode raw wire bytes (C order, ``[84,84,4]`` per stack) into ``[N,84,84,4]`` uint8."""
    if len(payload) == 0 or len(payload) % STACK_BYTES:
        raise ContractError(
            f"frames must be a positive multiple of {STACK_BYTES} bytes "
            f"(uint8 [N,{FRAME_HEIGHT},{FRAME_WIDTH},{STACK_SIZE}], C order); got {len(payload)} bytes"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape((-1, *STACK_SHAPE))


def frames_to_bytes(frames: np.ndarray) -> bytes:
    """Encode ``[N,84,84,4]`` (or one ``[84,84,4]``) uint8 stacks as wire bytes."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = frames[None]
    return np.ascontiguousarray(check_frames(frames)).tobytes()


def channels_last(stacks: np.ndarray) -> np.ndarray:
    """ALE vector-env observations ``[N,4,84,84]`` -> the model's ``[N,84,84,4]`` (a copy)."""
    return np.ascontiguousarray(np.moveaxis(stacks, 1, -1))
