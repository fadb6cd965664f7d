"""deploy/k8s/promote.sh against a stand-in kubectl and docker: gate records -> release image -> the pin.

The gate's records are written by the real promote step (deploy/k8s/gate/promote_release.py) on
two released models; promote.sh runs on a copy of deploy/, and the serving overlay it rewrote is
rendered with the real kubectl: it must serve the chosen release's image by digest with that
model's pin, and nothing may change when the copy off the volume is not the released file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from k8s_helpers import KUBECTL, REPO, needs_kubectl

from breakout_dqn.errors import ExitCode
from breakout_dqn.files import file_sha256

pytestmark = needs_kubectl
SHIPPED = REPO / "models" / "breakout-dqn.onnx"
REPOSITORY = "registry.example.com/breakout-dqn/release"
PUSHED_DIGEST = "sha256:" + "b" * 64
SERVE_IMAGE = "registry.example.com/breakout-dqn/serve@sha256:" + "a" * 64

KUBECTL_STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_DIR/kubectl-calls"
args=" $* "
case "$args" in
  *" get pods "*) cat "$STUB_DIR/pods" ;;
  *" logs "*) pod=$(sed -E 's/.* logs ([^ ]+) .*/\\1/' <<<"$args"); tail -n 1 "$STUB_DIR/logs/$pod" ;;
  *" apply -f - "*) cat > "$STUB_DIR/reader.yaml" ;;
  *" wait "*|*" delete pod "*) ;;
  *" exec "*) file=${args##* cat }; file=${file% }; cat "$STUB_DIR/volume${file#/models}" ;;
  *) echo "stub kubectl: unexpected: $*" >&2; exit 9 ;;
esac
"""
DOCKER_STUB = f"""#!/usr/bin/env bash
echo "$*" >> "$STUB_DIR/docker-calls"
case "$1" in
  build) cp "${{@: -1}}/model.onnx" "$STUB_DIR/built.onnx" ;;
  push) ;;
  inspect) echo "mirror.example.com/other@sha256:{'c' * 64}"; echo "{REPOSITORY}@{PUSHED_DIGEST}" ;;
  *) exit 9 ;;
esac
"""


def variant(path: Path, note: str) -> Path:
    """The shipped model with one more metadata entry: another file, another sha256, still valid."""
    import onnx

    model = onnx.load(str(SHIPPED))
    model.metadata_props.add(key="note", value=note)
    onnx.save(model, str(path))
    return path


def release(volume: Path, seed: int, mean: float, model: Path) -> str:
    """Run the gate's promote step for one seed; its last stdout line, as the pod's log holds it."""
    candidate = volume / "candidates" / f"seed-{seed}.onnx"
    candidate.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, candidate)
    report = candidate.with_suffix(".verify.json")
    report.write_text(json.dumps({"model": str(candidate), "ok": True, "exit_code": 0,
                                  "score": {"episodes": 30, "mean": mean, "min_score": 339.0}}))
    result = subprocess.run([sys.executable, str(REPO / "deploy" / "k8s" / "gate" / "promote_release.py"),
                             f"--candidate={candidate}", f"--verify-report={report}", "--min-score=339",
                             f"--releases={volume / 'releases'}", f"--seed={seed}"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def cluster(tmp_path: Path) -> dict:
    """Two seeds released (seed 1 the better), stand-in tools, and a copy of deploy/ to rewrite."""
    stubs = tmp_path / "stubs"
    (stubs / "logs").mkdir(parents=True)
    volume = stubs / "volume"
    logs = {0: release(volume, 0, 350.0, variant(tmp_path / "m0.onnx", "seed 0")),
            1: release(volume, 1, 375.0, variant(tmp_path / "m1.onnx", "seed 1"))}
    for seed, log in logs.items():
        (stubs / "logs" / f"breakout-dqn-gate-{seed}-x").write_text(f"a warning on stderr\n{log}")
    (stubs / "pods").write_text("breakout-dqn-gate-0-x\nbreakout-dqn-gate-1-x\n")
    for name, body in (("kubectl", KUBECTL_STUB), ("docker", DOCKER_STUB)):
        (stubs / name).write_text(body)
        (stubs / name).chmod(0o755)
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    records = {seed: json.loads(log.strip().splitlines()[-1]) for seed, log in logs.items()}
    return {"stubs": stubs, "root": tmp_path, "records": records,
            "overlay": tmp_path / "deploy" / "k8s" / "overlays" / "gke" / "serve"}


def run_promote(cluster: dict, *extra: str, serve_image: str = SERVE_IMAGE) -> subprocess.CompletedProcess:
    stubs = cluster["stubs"]
    env = {**os.environ, "STUB_DIR": str(stubs), "KUBECTL": f"{stubs / 'kubectl'} --namespace breakout-dqn-training",
           "DOCKER": str(stubs / "docker")}
    return subprocess.run(["bash", str(cluster["root"] / "deploy" / "k8s" / "promote.sh"), "--overlay",
                           str(cluster["overlay"]), "--serve-image", serve_image, "--repository", REPOSITORY, *extra],
                          capture_output=True, text=True, timeout=120, env=env)


def served(overlay: Path) -> tuple[set[str], dict[str, str]]:
    """The images of the serving pod and its model ConfigMap, as the overlay renders."""
    assert KUBECTL is not None
    rendered = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, check=True,
                              timeout=120).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    images = {c["image"] for c in [*spec["initContainers"], *spec["containers"]]}
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(
        "breakout-dqn-model-")]
    return images, config["data"]


def test_promote_pins_the_best_release_by_digest_and_its_model_version(cluster: dict) -> None:
    result = run_promote(cluster)
    assert result.returncode == 0, result.stdout + result.stderr
    best = cluster["records"][1]  # the higher mean score
    images, pin = served(cluster["overlay"])
    assert images == {f"{REPOSITORY}@{PUSHED_DIGEST}"}
    assert pin == {"BREAKOUT_DQN_MODEL": f"/opt/breakout-dqn/models/{best['sha256']}.onnx",
                   "BREAKOUT_DQN_MODEL_VERSION": best["model_version"]}
    # The image holds that very file, where the pin says.
    stubs = cluster["stubs"]
    assert file_sha256(stubs / "built.onnx") == best["sha256"]
    build = (stubs / "docker-calls").read_text().splitlines()[0]
    assert f"--build-arg SERVE_IMAGE={SERVE_IMAGE}" in build and f"--build-arg MODEL_SHA256={best['sha256']}" in build
    dockerfile = (REPO / "deploy" / "k8s" / "release" / "Dockerfile").read_text()
    (destination,) = re.findall(r"^COPY .*model\.onnx (\S+)$", dockerfile, re.MULTILINE)
    assert destination.replace("${MODEL_SHA256}", best["sha256"]) == pin["BREAKOUT_DQN_MODEL"]
    # The reader pod mounts the volume read-only and is valid against the pinned schema.
    import kubernetes_validate

    reader = yaml.safe_load((stubs / "reader.yaml").read_text())
    kubernetes_validate.validate(reader, "1.35.0", strict=True)
    assert reader["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True
    assert reader["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "delete pod" in (stubs / "kubectl-calls").read_text()


def test_promote_takes_the_seed_asked_for(cluster: dict) -> None:
    result = run_promote(cluster, "--seed", "0")
    assert result.returncode == 0, result.stderr
    assert served(cluster["overlay"])[1]["BREAKOUT_DQN_MODEL_VERSION"] == cluster["records"][0]["model_version"]


def test_promote_changes_nothing_when_the_copy_is_not_the_released_file(cluster: dict) -> None:
    before = served(cluster["overlay"])
    released = cluster["stubs"] / "volume" / "releases" / f"{cluster['records'][1]['sha256']}.onnx"
    released.chmod(0o644)
    released.write_bytes(released.read_bytes()[:-1] + b"\x00")
    result = run_promote(cluster)
    assert result.returncode == ExitCode.FAILURE and "not released" in result.stderr
    assert served(cluster["overlay"]) == before
    assert not (cluster["stubs"] / "docker-calls").exists()


@pytest.mark.parametrize(("change", "code"), [
    ("no pods", ExitCode.GATE),
    ("a seed that did not pass", ExitCode.GATE),
    ("a tag, not a digest", ExitCode.USAGE),
])
def test_promote_refuses_without_a_release_or_a_pinned_base(cluster: dict, change: str, code: int) -> None:
    before = served(cluster["overlay"])
    extra: tuple[str, ...] = ()
    serve_image = SERVE_IMAGE
    if change == "no pods":
        (cluster["stubs"] / "pods").write_text("")
    elif change == "a seed that did not pass":
        extra = ("--seed", "2")
    else:
        serve_image = "registry.example.com/breakout-dqn/serve:0.1.0"
    result = run_promote(cluster, *extra, serve_image=serve_image)
    assert result.returncode == code, result.stdout + result.stderr
    assert served(cluster["overlay"]) == before
