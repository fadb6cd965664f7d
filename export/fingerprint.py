"""A behavioural fingerprint carried in the ONNX metadata, so ``verify`` can catch changed weights.

An ONNX file can be edited after export (weights perturbed, re-quantized, swapped) while keeping
the contract's names, shapes and metadata. To detect that without the source ``.keras`` file, every
export stores, under the metadata key ``breakout_dqn.parity_fingerprint``, a JSON object with a
small **probe batch** and the **source Keras model's Q-values on it**:

* ``real_stacks``: ``R`` frame stacks from the parity gate's real Breakout play, uint8
  ``[R,84,84,4]`` C order, zlib-compressed, base64 (a few KB: Breakout frames are mostly black);
* ``noise_seed``/``noise_count``: ``K`` uniform-noise stacks, regenerated bit-for-bit anywhere as
  ``shake_256(b"breakout_dqn.probe:<seed>").digest(K*28224)`` (no NumPy RNG stream involved);
* then one all-0 and one all-255 stack. Probe order: real, noise, zeros, 255s; ``R+K+2`` rows.
* ``q_values``: float32 ``[R+K+2, 4]`` from Keras (written as exact float32 decimal values);
* ``atol``/``rtol``: the check passes when ``|q_onnx - q_ref| <= atol + rtol*|q_ref|`` for every
  element and the argmax agrees on every row except near-ties (see ``export.compare``).

The fingerprint tolerance (1e-4 + 1e-4*|q|) is 10x looser than the export's parity gate, to absorb
onnxruntime version and CPU (AVX2/AVX-512/ARM) differences between the exporting and the checking
machine; measured Keras-vs-onnxruntime drift is ~1e-7..1e-6. Sensitivity, measured on the seed-0
dueling network: Gaussian noise of 1% of a layer's weight std moves probe Q-values by ~1e-3 (about
10x the tolerance: caught); 0.1% noise moves them by ~1e-4 (at the tolerance: left to the export
gate, which sees ~1e-4 as 10x its own 1e-5). Changes below that cannot flip a greedy action except
at near-ties. NumPy and the standard library only (no TensorFlow).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from dataclasses import dataclass

import numpy as np

from breakout_dqn import contract
from breakout_dqn.errors import ContractError
from breakout_dqn.export.compare import Comparison, compare

META_FINGERPRINT = contract.META_FINGERPRINT
FORMAT = "probe-q/v1"
NOISE_SEED = 20_150_226  # Nature DQN publication date
NOISE_COUNT = 6
REAL_COUNT = 16
ATOL = 1e-4
RTOL = 1e-4

QFn = contract.QFn
"""Maps uint8 frame stacks ``[N,84,84,4]`` to float32 Q-values ``[N,4]``."""


class FingerprintError(ContractError):
    """The fingerprint metadata is missing, malformed, or the model does not reproduce it."""


def noise_stacks(seed: int, count: int) -> np.ndarray:
    """``count`` uniform uint8 stacks ``[count,84,84,4]``, identical on every platform and version."""
    data = hashlib.shake_256(f"breakout_dqn.probe:{seed}".encode()).digest(count * contract.STACK_BYTES)
    return np.frombuffer(data, dtype=np.uint8).reshape((count, *contract.STACK_SHAPE)).copy()


def edge_stacks() -> np.ndarray:
    """One all-0 and one all-255 stack, uint8 ``[2,84,84,4]``."""
    return np.stack([np.zeros(contract.STACK_SHAPE, np.uint8), np.full(contract.STACK_SHAPE, 255, np.uint8)])


def pick_real(stacks: np.ndarray, count: int = REAL_COUNT) -> np.ndarray:
    """``count`` stacks spread evenly over ``stacks`` (uint8 ``[M,84,84,4]``, M >= 1)."""
    contract.check_frames(stacks)
    index = np.linspace(0, len(stacks) - 1, num=min(count, len(stacks))).round().astype(int)
    return np.ascontiguousarray(stacks[index])


def build(real: np.ndarray, q_fn: QFn, *, noise_seed: int = NOISE_SEED, noise_count: int = NOISE_COUNT,
          atol: float = ATOL, rtol: float = RTOL) -> str:
    """The metadata value: probe = ``real`` + noise + edges, with ``q_fn``'s Q-values (the reference)."""
    contract.check_frames(real)
    probe = np.concatenate([real, noise_stacks(noise_seed, noise_count), edge_stacks()])
    q_ref = np.asarray(q_fn(probe), dtype=np.float32)
    if q_ref.shape != (len(probe), contract.NUM_ACTIONS) or not np.isfinite(q_ref).all():
        raise FingerprintError(f"reference Q-values must be finite float32 [{len(probe)},4], got {q_ref.shape}")
    payload = {
        "format": FORMAT,
        "real_count": len(real),
        "real_stacks": base64.b64encode(zlib.compress(np.ascontiguousarray(real).tobytes(), 9)).decode("ascii"),
        "noise_seed": noise_seed,
        "noise_count": noise_count,
        "probe_sha256": hashlib.sha256(probe.tobytes()).hexdigest(),
        "q_values": [[float(v) for v in row] for row in q_ref],
        "atol": atol,
        "rtol": rtol,
    }
    return json.dumps(payload, separators=(",", ":"))


@dataclass
class Fingerprint:
    """A decoded fingerprint: probe uint8 ``[P,84,84,4]``, reference float32 ``[P,4]``, tolerances."""

    probe: np.ndarray
    q_ref: np.ndarray
    atol: float
    rtol: float


def parse(value: str | None) -> Fingerprint:
    """Decode the metadata value or raise FingerprintError with a one-line reason."""
    if not value:
        raise FingerprintError(f"no {META_FINGERPRINT} in the model metadata (not written by 'breakout-dqn export')")
    try:
        data = json.loads(value)
        if data.get("format") != FORMAT:
            raise FingerprintError(f"unknown fingerprint format {data.get('format')!r}; expected {FORMAT!r}")
        real_count = int(data["real_count"])
        raw = zlib.decompress(base64.b64decode(data["real_stacks"], validate=True))
        real = np.frombuffer(raw, dtype=np.uint8).reshape((real_count, *contract.STACK_SHAPE))
        probe = np.concatenate([real, noise_stacks(int(data["noise_seed"]), int(data["noise_count"])), edge_stacks()])
        q_ref = np.asarray(data["q_values"], dtype=np.float32)
        atol, rtol = float(data["atol"]), float(data["rtol"])
        expected_sha = str(data["probe_sha256"])
    except FingerprintError:
        raise
    except (ValueError, KeyError, TypeError, zlib.error) as error:
        raise FingerprintError(f"malformed {META_FINGERPRINT}: {type(error).__name__}: {error}") from None
    if hashlib.sha256(probe.tobytes()).hexdigest() != expected_sha:
        raise FingerprintError("fingerprint probe does not hash to its recorded probe_sha256 (corrupt metadata)")
    if q_ref.shape != (len(probe), contract.NUM_ACTIONS) or not np.isfinite(q_ref).all():
        raise FingerprintError(f"fingerprint q_values must be finite [{len(probe)},4], got shape {list(q_ref.shape)}")
    if not (0 <= atol < 1 and 0 <= rtol < 1):
        raise FingerprintError(f"fingerprint tolerances out of range: atol={atol}, rtol={rtol}")
    return Fingerprint(probe, q_ref, atol, rtol)


def check(q_fn: QFn, value: str | None) -> tuple[Comparison, Fingerprint]:
    """Run ``q_fn`` on the fingerprint's probe and compare with the stored reference.

    Raises FingerprintError when the metadata is absent or malformed; a mismatch is reported by
    ``Comparison.passed`` being False.
    """
    fingerprint = parse(value)
    q_test = np.asarray(q_fn(fingerprint.probe))
    return compare(fingerprint.q_ref, q_test, fingerprint.atol, fingerprint.rtol), fingerprint
