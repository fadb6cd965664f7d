"""Serving on its own: its model in its image, scaled on its load, closed by default (issue 44, findings 4-6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from k8s_helpers import (
    DEPLOY,
    REPO,
    command_line,
    container,
    container_env,
    find,
    needs_kubectl,
    of_kind,
    pod_spec,
    render,
    with_object,
)

pytestmark = needs_kubectl
TRAINING_NAMESPACE = "breakout-dqn-training"


def serving() -> list[str]:
    return with_object("Deployment", "breakout-dqn-serve")


def selects(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get("matchExpressions")


@pytest.mark.parametrize("directory", serving())
def test_serving_mounts_nothing_from_training(directory: str) -> None:
    objects = render(directory)
    deployment = find(objects, "Deployment", "breakout-dqn-serve")
    spec = pod_spec(deployment)
    assert not [v for v in spec["volumes"] if "persistentVolumeClaim" in v or "ephemeral" in v], spec["volumes"]
    assert not of_kind(objects, "PersistentVolumeClaim")
    assert {obj["metadata"].get("namespace") for obj in objects} == {"breakout-dqn"}  # not training's
    # The model it serves is a file of its image (the pin's path is under the image's WORKDIR).
    env = container_env(spec, container(spec, "serve"), objects)
    assert env["BREAKOUT_DQN_MODEL"].startswith("/opt/breakout-dqn/models/"), env
    mounts = [m["mountPath"] for c in (container(spec, "serve"), container(spec, "check-model-version"))
              for m in c["volumeMounts"]]
    assert not any(env["BREAKOUT_DQN_MODEL"].startswith(path + "/") for path in mounts), mounts
    assert container(spec, "serve")["image"] == container(spec, "check-model-version")["image"]


def metrics_port(spec: dict, objects: tuple) -> int:
    serve = container(spec, "serve")
    (port,) = [p["containerPort"] for p in serve["ports"] if p["name"] == "metrics"]
    assert container_env(spec, serve, objects)["BREAKOUT_DQN_METRICS_PORT"] == str(port)
    return port


@pytest.mark.parametrize("directory", [d for d in serving() if d.startswith("overlays/")])
def test_deployed_serving_scales_on_in_flight_work_with_cpu_as_the_fallback(directory: str) -> None:
    objects = render(directory)
    spec = pod_spec(find(objects, "Deployment", "breakout-dqn-serve"))
    metrics = find(objects, "HorizontalPodAutoscaler", "breakout-dqn-serve")["spec"]["metrics"]
    assert metrics[0]["type"] == "Pods" and metrics[0]["pods"]["target"]["type"] == "AverageValue"
    name = metrics[0]["pods"]["metric"]["name"]
    assert name == "breakout_dqn_in_flight"
    assert [m["resource"]["name"] for m in metrics if m["type"] == "Resource"] == ["cpu"]
    # Prometheus scrapes the port the server serves its metrics on, and the adapter serves the name.
    (monitor,) = of_kind(objects, "PodMonitor")
    labels = find(objects, "Deployment", "breakout-dqn-serve")["spec"]["template"]["metadata"]["labels"]
    assert selects(monitor["spec"]["selector"], labels)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    metrics_port(spec, objects)
    values = yaml.safe_load((DEPLOY / "components" / "serve-metrics" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == name and rule["seriesQuery"].startswith(f"{name}{{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # a per-pod (Pods) metric


def policies_for(objects: tuple, labels: dict) -> list[dict]:
    return [p for p in of_kind(objects, "NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]


@pytest.mark.parametrize("directory", serving())
def test_serving_admits_clients_on_the_grpc_port_only_and_opens_no_connection(directory: str) -> None:
    objects = render(directory)
    deployment = find(objects, "Deployment", "breakout-dqn-serve")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    policies = policies_for(objects, labels)
    assert policies
    assert any("Egress" in p["spec"]["policyTypes"] for p in policies)
    assert not [p for p in policies if p["spec"].get("egress")]  # no egress rule: none allowed
    ports = {p["name"]: p["containerPort"] for p in container(pod_spec(deployment), "serve")["ports"]}
    admitted = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"{policy['metadata']['name']}: a rule open to every source"
            rule_ports = {port["port"] for port in rule["ports"]}
            assert rule_ports <= set(ports), rule_ports
            admitted |= rule_ports
            for source in rule["from"]:
                if rule_ports == {"grpc"}:  # clients: a labelled pod in any namespace
                    assert source["podSelector"]["matchLabels"] == {"breakout-dqn/client": "true"}
                else:  # the metrics port: Prometheus' namespace only
                    assert rule_ports == {"metrics"} and "podSelector" not in source
                    assert source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    assert admitted == ({"grpc", "metrics"} if of_kind(objects, "PodMonitor") else {"grpc"})


@pytest.mark.parametrize("directory", [*with_object("Job", "breakout-dqn-train"),
                                       *with_object("Job", "breakout-dqn-gate")])
def test_training_and_the_gate_talk_to_nobody(directory: str) -> None:
    objects = render(directory)
    for job in of_kind(objects, "Job"):
        policies = policies_for(objects, job["spec"]["template"]["metadata"]["labels"])
        assert policies, f"{directory}: no NetworkPolicy selects {job['metadata']['name']}"
        assert all(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not p["spec"].get("ingress")
                   and not p["spec"].get("egress") for p in policies)


def tls_serving() -> list[str]:
    return [d for d in serving() if of_kind(render(d), "Certificate")]


def mounted_file(spec: dict, cont: dict, path: str) -> dict:
    """The volume holding ``path`` in ``cont``."""
    (mount,) = [m for m in cont["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    return volume


def test_an_overlay_serves_over_tls_with_a_token() -> None:
    assert tls_serving()


@pytest.mark.parametrize("directory", tls_serving())
def test_tls_serving_uses_the_certificates_secret_a_token_and_probes_that_speak_tls(directory: str) -> None:
    objects = render(directory)
    (certificate,) = of_kind(objects, "Certificate")
    spec = pod_spec(find(objects, "Deployment", "breakout-dqn-serve"))
    serve = container(spec, "serve")
    argv = command_line(spec, serve, objects)
    flags = dict(arg.split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    for name in ("--tls-cert", "--tls-key"):
        assert mounted_file(spec, serve, flags[name])["secret"]["secretName"] == certificate["spec"]["secretName"]
    token = mounted_file(spec, serve, flags["--auth-token-file"])["secret"]["secretName"]
    assert token != certificate["spec"]["secretName"]
    assert "fsGroup" in spec["securityContext"]  # the secret files are readable by the images' group
    services = [s["metadata"]["name"] for s in of_kind(objects, "Service")]
    assert all(f"{name}.breakout-dqn.svc" in certificate["spec"]["dnsNames"] for name in services)
    assert not [p for s in of_kind(objects, "Service") for p in s["spec"]["ports"]
                if p.get("appProtocol") == "kubernetes.io/h2c"]  # not plaintext any more
    grpc_port = next(p["containerPort"] for p in serve["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = serve[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", "breakout_dqn.serving.healthcheck"], command
        probe_flags = dict(arg.split("=", 1) for arg in command[3:])
        assert probe_flags["--target"] == f"127.0.0.1:{grpc_port}"
        assert mounted_file(spec, serve, probe_flags["--tls-ca"])["secret"]["secretName"] == certificate[
            "spec"]["secretName"]
        assert probe_flags["--tls-server-name"] in certificate["spec"]["dnsNames"]
        assert healthcheck_accepts(command[3:]), command


def healthcheck_accepts(args: list[str]) -> bool:
    """Whether the health check's parser takes these flags (the CA file need not exist here)."""
    result = subprocess.run([sys.executable, "-m", "breakout_dqn.serving.healthcheck", *args, "--timeout=0.1"],
                            capture_output=True, text=True, timeout=60, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    return "usage:" not in result.stderr and "unrecognized arguments" not in result.stderr


def test_serving_overlays_pin_the_model_their_image_carries(tmp_path: Path) -> None:
    # The repository's overlay serves the shipped model: its pin is that file's version.
    for directory in [d for d in serving() if d.startswith("overlays/")]:
        objects = render(directory)
        spec = pod_spec(find(objects, "Deployment", "breakout-dqn-serve"))
        env = container_env(spec, container(spec, "serve"), objects)
        if env["BREAKOUT_DQN_MODEL"] != "/opt/breakout-dqn/models/breakout-dqn.onnx":
            continue  # a promoted release: tests/deploy/test_k8s_promote.py builds one
        result = subprocess.run([sys.executable, str(DEPLOY / "serve" / "check_model_version.py"), "--model",
                                 str(REPO / "models" / "breakout-dqn.onnx"), "--expect",
                                 env["BREAKOUT_DQN_MODEL_VERSION"]], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stderr
