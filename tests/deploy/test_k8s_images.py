"""Images from a named registry, by digest where deployed, for the lock's architecture (issue 44, finding 7)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from k8s_helpers import REPO, all_containers, kustomizations, needs_kubectl, overlays, pod_spec, render

pytestmark = needs_kubectl
SCRIPT = REPO / "scripts" / "check_k8s_images.py"
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}  # a wheel platform's machine -> kubernetes.io/arch


def policy():  # scripts/ is not a package: load the script as a module
    spec = importlib.util.spec_from_file_location("check_k8s_images", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workloads(directory: str) -> list[dict]:
    return [o for o in render(directory) if o["kind"] in ("Deployment", "Job")]


@pytest.mark.parametrize("directory", overlays())
def test_every_deployed_image_names_its_registry_and_a_digest(directory: str) -> None:
    check = policy()
    found = list(check.references(list(render(directory))))
    assert found
    for where, reference in found:
        assert check.problems(reference, require_digest=True) == [], (directory, where, reference)
        assert ":latest" not in reference


def test_a_tag_or_a_bare_name_breaks_the_policy() -> None:
    check = policy()
    assert check.problems("breakout-dqn:0.1.0", require_digest=False)  # docker.io/library/breakout-dqn
    assert check.problems("breakout/dqn@sha256:" + "a" * 64, require_digest=True)  # docker.io/breakout/dqn
    assert check.problems("registry.example.com/breakout-dqn:0.1.0", require_digest=True)
    assert check.problems("registry.example.com/breakout-dqn:0.1.0", require_digest=False) == []
    assert check.problems("localhost:5000/breakout-dqn@sha256:" + "a" * 64, require_digest=True) == []


@pytest.mark.parametrize("directory", [d for d in kustomizations() if not d.startswith("overlays/")])
def test_building_blocks_name_a_registry_that_cannot_resolve(directory: str) -> None:
    for workload in workloads(directory):
        for cont in all_containers(pod_spec(workload)):
            assert cont["image"].startswith("registry.invalid/"), (directory, cont["name"], cont["image"])


def test_the_ci_check_fails_an_image_without_a_digest(tmp_path: Path) -> None:
    rendered = tmp_path / "train.yaml"
    rendered.write_text(subprocess.run(["kubectl", "kustomize", str(REPO / "deploy" / "k8s" / "train")],
                                       capture_output=True, text=True, check=True, timeout=120).stdout)
    loose = subprocess.run([sys.executable, str(SCRIPT), str(rendered)], capture_output=True, text=True, timeout=60)
    assert loose.returncode == 0, loose.stdout
    strict = subprocess.run([sys.executable, str(SCRIPT), str(rendered), "--require-digest"], capture_output=True,
                            text=True, timeout=60)
    assert strict.returncode == 1 and "Job breakout-dqn-train container train" in strict.stdout
    assert "not pinned by a sha256 digest" in strict.stdout


def test_every_pod_runs_on_the_architecture_the_lock_resolves_for() -> None:
    lock = (REPO / "scripts" / "lock.sh").read_text()
    platforms = set(re.findall(r"--python-platform\s+(\w+?)-", lock))
    assert len(platforms) == 1, platforms
    arch = GOARCH[platforms.pop()]
    for directory in kustomizations():
        for workload in workloads(directory):
            spec = pod_spec(workload)
            assert spec["nodeSelector"]["kubernetes.io/arch"] == arch, (directory, workload["metadata"]["name"])
            for cont in all_containers(spec):
                assert cont["imagePullPolicy"] == "IfNotPresent", (directory, cont["name"])  # digests: never moves
