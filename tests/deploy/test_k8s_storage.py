"""The training volume holds what the seeds write, computed from the code (issue 44, finding 1).

For every kustomization with the training Job, the rendered `train` command is resolved by the
trainer's own config code; from it and the replay's and checkpoints' own sizes the per-seed disk
need follows, and the volume must hold ``completions`` of them. A memory-mapped replay read at
random all through training must be on a block volume (ReadWriteOnce), never on the network file
storage a ReadWriteMany claim gets; such a volume forces the seeds (and the gate) onto one node.
"""

from __future__ import annotations

import functools
import math

import pytest
from k8s_helpers import (
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

from breakout_dqn.training import replay, replay_storage
from breakout_dqn.training.config import TrainConfig

pytestmark = needs_kubectl
LOG_BYTES = 64 * 1024**2  # metrics.jsonl and tb/ of a 3M-step run: 0.5 MB measured, kept generous
FLOAT32_BYTES = 4


def training_kustomizations() -> list[str]:
    return with_object("Job", "breakout-dqn-train")


@functools.cache
def parameters(dueling: bool, layer_norm: bool) -> int:
    from breakout_dqn.training.model import build_q_network

    return int(build_q_network(dueling=dueling, layer_norm=layer_norm).count_params())


def run_directory_bytes(config: TrainConfig) -> int:
    """One seed's files but the replay: checkpoints, model, logs, and the gate's candidate."""
    weights = parameters(config.dueling, config.layer_norm) * FLOAT32_BYTES
    checkpoint = 4 * weights + 1024**2  # online, target, Adam's two moments; the loop state
    kept = config.keep_checkpoints + 1  # the new one is written before the oldest goes
    return kept * checkpoint + 2 * weights + weights + LOG_BYTES  # model + its temp file; candidate


def durable_replay_bytes(config: TrainConfig) -> int:
    """The memory-mapped replay's file, the trainer's disk headroom and the longest rollback journal."""
    slots = replay.slots_per_env(config.replay_capacity, config.num_envs)
    ring = replay_storage.storage_bytes(config.num_envs, slots)
    journal_entries = min(slots, math.ceil(config.checkpoint_every / config.num_envs))  # one a vector step
    journal = replay_storage.HEADER_BYTES + journal_entries * replay_storage.storage_bytes(config.num_envs, 1)
    return ring + replay_storage.DISK_HEADROOM_BYTES + journal


@pytest.mark.parametrize("directory", training_kustomizations())
def test_training_volume_holds_every_seed_with_its_replay(directory: str) -> None:
    objects = render(directory)
    job = find(objects, "Job", "breakout-dqn-train")
    spec = pod_spec(job)
    claims = set(claim_names(spec).values())
    assert claims == {"breakout-dqn-runs"}, claims
    claim = find(objects, "PersistentVolumeClaim", "breakout-dqn-runs")
    config = train_config(directory)
    per_seed = run_directory_bytes(config) + (durable_replay_bytes(config) if config.durable_replay else 0)
    need = job["spec"]["completions"] * per_seed / 1024**3
    size = gibibytes(claim["spec"]["resources"]["requests"]["storage"])
    assert size >= need, f"{directory}: {size} GiB < {need:.1f} GiB for {job['spec']['completions']} seeds"


@pytest.mark.parametrize("directory", training_kustomizations())
def test_a_memory_mapped_replay_is_on_a_block_volume_and_its_seeds_share_a_node(directory: str) -> None:
    objects = render(directory)
    job = find(objects, "Job", "breakout-dqn-train")
    modes = find(objects, "PersistentVolumeClaim", "breakout-dqn-runs")["spec"]["accessModes"]
    if train_config(directory).durable_replay:
        assert modes == ["ReadWriteOnce"], f"{directory}: the replay on a {modes} (network file) volume"
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


def test_the_base_keeps_the_replay_in_memory_on_a_shared_volume() -> None:
    # The base is what a ReadWriteMany (network file) class gets: no memory-mapped replay there.
    assert train_config("train").durable_replay is False
    assert find(render("train"), "PersistentVolumeClaim", "breakout-dqn-runs")["spec"]["accessModes"] == [
        "ReadWriteMany"]
