"""Training and serving applied apart, in their namespaces, with the overlays a cluster needs (issue 44, finding 8).

Also checks that every command of the Kubernetes guide's end-to-end flow names a path that exists
(`kubectl apply -k DIR` a kustomization that renders, scripts and files that are there).
"""

from __future__ import annotations

import re

import pytest
from k8s_helpers import (
    DEPLOY,
    REPO,
    all_containers,
    find,
    kustomizations,
    needs_kubectl,
    of_kind,
    overlays,
    pod_spec,
    render,
)

pytestmark = needs_kubectl
GUIDE = REPO / "docs" / "guides" / "kubernetes.md"
NAMESPACES = {"training": "breakout-dqn-training", "gate": "breakout-dqn-training", "serve": "breakout-dqn"}


def stages(directory: str) -> set[str]:
    """Which stages' workloads a kustomization holds."""
    return {w["metadata"]["labels"]["app.kubernetes.io/component"] for w in render(directory)
            if w["kind"] in ("Job", "Deployment")}


def test_no_kustomization_applies_serving_with_training_or_the_gate() -> None:
    assert not (DEPLOY / "kustomization.yaml").exists()  # no root that bundles the stages
    for directory in kustomizations():
        held = stages(directory)
        assert len(held) <= 1, f"{directory} applies {sorted(held)} together"


@pytest.mark.parametrize("directory", [d for d in kustomizations() if d != "namespaces"])
def test_every_object_lands_in_its_stages_namespace(directory: str) -> None:
    objects = render(directory)
    held = stages(directory)
    assert len(held) == 1, directory
    expected = NAMESPACES[held.pop()]
    for obj in objects:
        assert obj["metadata"].get("namespace") == expected, (directory, obj["kind"], obj["metadata"]["name"])


def test_the_namespaces_enforce_the_restricted_pod_security_profile() -> None:
    created = {ns["metadata"]["name"]: ns["metadata"]["labels"] for ns in of_kind(render("namespaces"), "Namespace")}
    assert set(created) == set(NAMESPACES.values())
    for labels in created.values():
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_each_environment_applies_train_gate_and_serve_apart() -> None:
    environments: dict[str, set[str]] = {}
    for directory in overlays():
        environment, stage = directory.split("/")[1:3]
        environments.setdefault(environment, set()).add(stage)
    assert environments
    for environment, held in environments.items():
        assert {"train", "gate", "serve"} <= held, (environment, held)


def test_a_gpu_variant_trains_on_one_gpu_per_seed_from_the_gpu_image() -> None:
    gpu = [d for d in overlays() for o in of_kind(render(d), "Job")
           if any("nvidia.com/gpu" in c["resources"]["limits"] for c in all_containers(pod_spec(o)))]
    assert gpu, "no overlay trains on a GPU"
    for directory in gpu:
        spec = pod_spec(find(render(directory), "Job", "breakout-dqn-train"))
        train = [c for c in spec["containers"] if c["name"] == "train"][0]
        assert train["resources"]["limits"]["nvidia.com/gpu"] == "1" and "/train-gpu@sha256:" in train["image"]
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])


def guide_commands() -> list[str]:
    """The lines of the guide's ```bash blocks, comments left out."""
    commands, language = [], None
    for line in GUIDE.read_text().splitlines():
        if line.startswith("```"):
            language = line[3:].strip() if language is None else None
        elif language == "bash" and line.strip() and not line.strip().startswith("#"):
            commands.append(line.strip())
    return commands


def test_the_guides_flow_names_only_what_exists() -> None:
    commands = guide_commands()
    applied = set()
    for command in commands:
        for directory in re.findall(r"kubectl (?:apply|delete|kustomize)(?: [^ ]+)* -k (\S+)", command):
            relative = directory.removeprefix("deploy/k8s/").removeprefix("deploy/k8s").strip("/") or "."
            assert relative in kustomizations(), command
            applied.add(relative)
        for path in re.findall(r"(?<![\w./-])((?:deploy|scripts)/[\w./-]+\.(?:sh|py|yaml|env))", command):
            assert (REPO / path).exists(), command
    # The flow: namespaces, train, gate, promote, roll out (apply serve), roll back.
    assert "namespaces" in applied and {"train", "gate", "serve"} <= {d.rsplit("/", 1)[-1] for d in applied}
    joined = "\n".join(commands)
    for step in ("gate-job.sh breakout-dqn-gate", "promote.sh", "rollout status", "git revert"):
        assert step in joined, step
