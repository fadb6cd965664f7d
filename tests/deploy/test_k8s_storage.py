"""The training volume holds what the seeds write, computed from the code (issue 44, finding 1).

For every kustomization with the training Job, the rendered `train` command is resolved by the
trainer's own config code; from it and the checkpoints' and model's own sizes the per-seed disk
need follows (the run directory and the gate's average of its last two checkpoints, averaged/seed-N/),
and the volume must hold ``completions`` of them and room for releases. The shipped recipe is PQN: no
replay, so nothing of one on disk. A ReadWriteOnce (block) volume forces the seeds (and the gate) onto
one node.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from k8s_helpers import (
    REPO,
    claim_names,
    find,
    gibibytes,
    needs_kubectl,
    of_kind,
    overlays,
    pod_spec,
    render,
    train_config,
    with_object,
)

from breakout_dqn.training.config import DQNConfig, TrainConfig

pytestmark = needs_kubectl
LOG_BYTES = 64 * 1024**2  # metrics.jsonl and tb/: 1.3 MB of metrics.jsonl in the 10M-step PQN record, kept generous
FLOAT32_BYTES = 4
STATE_BYTES = 1024**2  # a checkpoint's run state: counters, generators, metric windows (JSON)
RELEASE_BYTES = (REPO / "models" / "breakout-dqn.onnx").stat().st_size  # one release: the shipped model's size
MIN_RELEASES = 100  # what the volume keeps room for besides the seeds


def training_kustomizations() -> list[str]:
    return with_object("Job", "breakout-dqn-train")


@functools.cache
def parameters(dueling: bool, layer_norm: bool) -> int:
    from breakout_dqn.training.model import build_q_network

    return int(build_q_network(dueling=dueling, layer_norm=layer_norm).count_params())


def weights_bytes(config: TrainConfig) -> int:
    """The network's float32 weights: the size of model.keras and of the exported candidate, about."""
    return parameters(getattr(config, "dueling", False), config.layer_norm) * FLOAT32_BYTES


def checkpoint_bytes(config: TrainConfig) -> int:
    networks = 2 if isinstance(config, DQNConfig) else 1  # DQN's target network; PQN has none
    return (networks + 2) * weights_bytes(config) + STATE_BYTES  # the networks, Adam's (RAdam's) two moments


def run_directory_bytes(config: TrainConfig) -> int:
    """One seed's files: checkpoints, model, logs, and the gate's candidate."""
    kept = config.keep_checkpoints + 1  # the new one is written before the oldest goes
    return kept * checkpoint_bytes(config) + 3 * weights_bytes(config) + LOG_BYTES  # model, its temp file, candidate


def averaged_directory_bytes(config: TrainConfig) -> int:
    """The gate's averaged/seed-N/ (training/average.py): the averaged model.keras, a copy of the newest
    checkpoint and of metrics.jsonl (within the logs' allowance), config.json and average.json (bytes)."""
    return checkpoint_bytes(config) + weights_bytes(config) + LOG_BYTES


def seed_bytes(config: TrainConfig) -> int:
    return run_directory_bytes(config) + averaged_directory_bytes(config)


@pytest.mark.parametrize("directory", training_kustomizations())
def test_training_volume_holds_every_seed_and_room_for_releases(directory: str) -> None:
    objects = render(directory)
    job = find(objects, "Job", "breakout-dqn-train")
    spec = pod_spec(job)
    claims = set(claim_names(spec).values())
    assert claims == {"breakout-dqn-runs"}, claims
    claim = find(objects, "PersistentVolumeClaim", "breakout-dqn-runs")
    config = train_config(directory)
    # A DQN recipe's durable replay (as much disk as memory) is not sized here: the shipped recipe has none.
    assert not getattr(config, "durable_replay", False), f"{directory}: a replay on the volume, not sized here"
    need = job["spec"]["completions"] * seed_bytes(config)
    size = gibibytes(claim["spec"]["resources"]["requests"]["storage"]) * 1024**3
    assert size >= need + MIN_RELEASES * RELEASE_BYTES, (
        f"{directory}: {size / 1024**3} GiB < {need / 1024**3:.2f} GiB for {job['spec']['completions']} seeds "
        f"+ {MIN_RELEASES} releases")


def test_a_checkpoint_is_the_size_the_sizing_assumes(tmp_path: Path) -> None:
    """The estimate against a checkpoint of the recipe's learner, as `train` writes it (20.3 MB for PQN)."""
    from breakout_dqn.training.checkpoint import save_checkpoint
    from breakout_dqn.training.learners import build_learner

    config = train_config("train")
    learner = build_learner(config)
    size = save_checkpoint(tmp_path, 1, learner.state(), {"step": 1}, keep=1).stat().st_size
    assert size <= checkpoint_bytes(config) <= 1.1 * size, (size, checkpoint_bytes(config))


@pytest.mark.parametrize("directory", training_kustomizations())
def test_a_read_write_once_volume_puts_the_parallel_seeds_on_one_node(directory: str) -> None:
    objects = render(directory)
    job = find(objects, "Job", "breakout-dqn-train")
    modes = find(objects, "PersistentVolumeClaim", "breakout-dqn-runs")["spec"]["accessModes"]
    if modes == ["ReadWriteOnce"] and job["spec"]["parallelism"] > 1:
        assert colocated(job, "training"), f"{directory}: parallel seeds on a ReadWriteOnce volume, any node"


def colocated(workload: dict, component: str) -> bool:
    """Whether the pods must share one node with the others of their component."""
    terms = pod_spec(workload).get("affinity", {}).get("podAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", [])
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    return any(term["topologyKey"] == "kubernetes.io/hostname"
               and term["labelSelector"]["matchLabels"].get("app.kubernetes.io/component") == component
               and term["labelSelector"]["matchLabels"].items() <= pod_labels.items() for term in terms)


def test_every_overlay_names_its_storage_class_and_its_gate_follows_the_volume() -> None:
    checked = 0
    for directory in overlays():
        for claim in of_kind(render(directory), "PersistentVolumeClaim"):
            assert claim["spec"].get("storageClassName"), f"{directory}: {claim['metadata']['name']} names no class"
            checked += 1
        if directory.endswith("/gate"):
            train = directory.rsplit("/", 1)[0] + "/train"
            modes = find(render(train), "PersistentVolumeClaim", "breakout-dqn-runs")["spec"]["accessModes"]
            gate = find(render(directory), "Job", "breakout-dqn-gate")
            if modes == ["ReadWriteOnce"] and gate["spec"]["parallelism"] > 1:
                assert colocated(gate, "gate"), directory
    assert checked >= 1


def test_the_base_trains_without_a_replay_on_a_shared_volume() -> None:
    # The base is what a ReadWriteMany (network file) class gets: any node per seed.
    assert train_config("train").algorithm == "pqn"
    assert find(render("train"), "PersistentVolumeClaim", "breakout-dqn-runs")["spec"]["accessModes"] == [
        "ReadWriteMany"]
