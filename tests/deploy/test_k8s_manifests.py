"""deploy/k8s, checked without a cluster: the schema check, and what the schema cannot see.

The schema check is scripts/check-k8s.sh (kubectl kustomize + kubernetes-validate). The rest reads
the rendered objects and holds them to the code they run: every command line parses with today's
flags (and `train`'s resolves, as `breakout-dqn train --print-config` does), the training Job
trains the shipped recipe, the images' user and writable paths, the trainer's memory, the server's
probes, port, grace period and model version. Storage, retries, the gate, serving, images and the stages' separation
have their own files (test_k8s_*.py).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from k8s_helpers import (
    DEPLOY,
    REPO,
    all_containers,
    command_line,
    container,
    container_env,
    find,
    gibibytes,
    kustomizations,
    needs_kubectl,
    pod_spec,
    render,
    train_config,
    with_object,
)

from breakout_dqn.cli import COMMANDS

pytestmark = needs_kubectl
DOCKERFILE = (REPO / "Dockerfile").read_text()
WORKLOADS = ("Deployment", "Job")
# The shipped model's recipe: the training Job trains it (the gate's floor comes from its record).
RECIPE = REPO / "results" / "pqn-eps05-s1-10m" / "config.json"
# Settings a pod's command sets for itself: where it writes, which seed, resuming, how often it checkpoints.
PER_DEPLOYMENT = {"out", "seed", "resume", "auto_resume", "progress", "checkpoint_every"}
# Peak resident memory of the training Job's command over 20,480 agent steps (128 games, a final evaluation
# of 8 games): `/usr/bin/time -v breakout-dqn train --preset pqn --epsilon-end 0.05 --steps 20000 ...` on a
# 2-core AMD EPYC Zen 5, busy with another training run: 1,356,348 KiB.
MEASURED_PEAK_RSS_BYTES = 1_356_348 * 1024


def parse(argv: list[str]) -> argparse.Namespace:
    """``breakout-dqn COMMAND ARGS...`` through the command's own parser; an unknown flag fails."""
    assert argv[0] == "breakout-dqn", argv
    module = importlib.import_module(COMMANDS[argv[1]][0])
    try:
        if hasattr(module, "build_parser"):
            return module.build_parser().parse_args(argv[2:])
        return module.parse_args(argv[2:])
    except SystemExit as error:
        raise AssertionError(f"`breakout-dqn {argv[1]}` refuses {argv[2:]} (exit {error.code})") from None


def workloads() -> list[tuple[str, dict]]:
    return [(directory, obj) for directory in kustomizations() for obj in render(directory) if obj["kind"] in WORKLOADS]


def test_every_kustomization_renders_and_validates_against_the_pinned_schema() -> None:
    environment = {**os.environ, "PYTHON": sys.executable,
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "scripts/check-k8s.sh"], capture_output=True, text=True, timeout=300,
                            cwd=REPO, env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    for directory in kustomizations():
        shown = "deploy/k8s" if directory == "." else f"deploy/k8s/{directory}"
        assert re.search(rf"^ok +{re.escape(shown)}: \d+ objects valid", result.stdout, re.MULTILINE), result.stdout


def test_every_pod_runs_as_the_images_numeric_user_on_a_read_only_root() -> None:
    users = set(re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE))
    assert len(users) == 1 and re.fullmatch(r"\d+:\d+", next(iter(users))), users  # runAsNonRoot needs a number
    uid, gid = (int(part) for part in next(iter(users)).split(":"))
    # The image keeps every incidental write under /tmp, the one writable path besides the data volume.
    for variable in ("HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        assert re.search(rf"\b{variable}=/tmp\b", DOCKERFILE), variable
    for directory, workload in workloads():
        spec = pod_spec(workload)
        where = f"{directory}: {workload['kind']} {workload['metadata']['name']}"
        security = spec["securityContext"]
        assert (security["runAsNonRoot"], security["runAsUser"], security["runAsGroup"]) == (True, uid, gid), where
        assert spec["automountServiceAccountToken"] is False, where
        empty_dirs = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        for cont in all_containers(spec):
            context = cont["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (where, cont["name"])
            assert context["allowPrivilegeEscalation"] is False, (where, cont["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (where, cont["name"])
            tmp = [mount for mount in cont["volumeMounts"] if mount["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in empty_dirs, f"{where}: {cont['name']} has no emptyDir at /tmp"
            assert cont["resources"]["limits"]["memory"], (where, cont["name"])


def test_every_command_parses_with_the_flags_the_cli_accepts_today() -> None:
    checked = 0
    for directory, workload in workloads():
        spec = pod_spec(workload)
        for cont in all_containers(spec):
            # Expands every $(VAR): a reference to an undefined variable would reach the command verbatim.
            argv = command_line(spec, cont, render(directory), completion_index=1)
            if argv[0] != "breakout-dqn":
                continue
            parse(argv)
            if argv[1] == "train":  # a flag of the other algorithm parses but is refused: resolve it too
                printed_config(directory)
            checked += 1
    assert checked >= 4  # train, export, verify, serve


@functools.cache
def printed_config(directory: str) -> dict:
    """What `breakout-dqn train ARGS --print-config` prints for the training Job's command (exit 2 fails)."""
    objects = render(directory)
    spec = pod_spec(find(objects, "Job", "breakout-dqn-train"))
    argv = command_line(spec, container(spec, "train"), objects, completion_index=1)
    result = subprocess.run([sys.executable, "-m", "breakout_dqn.cli", *argv[1:], "--print-config"],
                            capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, f"{directory}: `breakout-dqn train` refuses {argv[2:]}: {result.stderr}"
    return json.loads(result.stdout)


def test_training_job_trains_the_shipped_recipe() -> None:
    recipe = json.loads(RECIPE.read_text())
    directories = with_object("Job", "breakout-dqn-train")
    assert "train" in directories and len(directories) >= 3  # the base and the GKE overlays
    for directory in directories:
        printed = printed_config(directory)
        assert printed.keys() == recipe.keys(), directory
        differ = {key: (printed[key], recipe[key]) for key in recipe
                  if key not in PER_DEPLOYMENT and printed[key] != recipe[key]}
        assert not differ, f"{directory} differs from {RECIPE.parent.name}: {differ}"


def test_training_job_trains_one_seed_per_completion_index_and_resumes_itself() -> None:
    objects = render("train")
    job = find(objects, "Job", "breakout-dqn-train")
    spec = pod_spec(job)
    assert job["spec"]["completionMode"] == "Indexed"
    assert spec["restartPolicy"] == "Never"
    # A replacement pod waits for the one still writing its checkpoint (train.lock refuses it otherwise).
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    train = container(spec, "train")
    mounts = {mount["name"]: mount["mountPath"] for mount in train["volumeMounts"]}
    claims = {volume["name"] for volume in spec["volumes"] if "persistentVolumeClaim" in volume}
    (volume_path,) = [path for name, path in mounts.items() if name in claims]
    gate_job = find(render("gate"), "Job", "breakout-dqn-gate")
    gate_spec = pod_spec(gate_job)
    assert gate_job["spec"]["completions"] == job["spec"]["completions"]
    outs = set()
    for index in range(job["spec"]["completions"]):
        argv = command_line(spec, train, objects, completion_index=index)
        assert argv[:2] == ["breakout-dqn", "train"] and "--auto-resume" in argv
        assert f"--seed={index}" in argv, argv
        (out,) = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--out=")]
        assert out.startswith(volume_path + "/"), out
        outs.add(out)
        # The gate Job's index N averages what the training Job's index N trained, and exports that average.
        average_argv = command_line(gate_spec, container(gate_spec, "average"), render("gate"), index)
        assert average_argv[3] == out, average_argv
        (averaged,) = [arg.split("=", 1)[1] for arg in average_argv if arg.startswith("--out=")]
        export_argv = command_line(gate_spec, container(gate_spec, "export"), render("gate"), index)
        assert export_argv[:3] == ["breakout-dqn", "export", f"{averaged}/model.keras"], export_argv
    assert len(outs) == job["spec"]["completions"]  # every seed its own run directory


def test_training_memory_holds_a_rollout_and_the_learner() -> None:
    """PQN keeps no replay: one rollout's arrays plus the trainer's allowance for TensorFlow, the network,
    the optimizer and the games (the headroom the trainer's own memory check adds to a DQN's replay)."""
    from breakout_dqn.training import replay
    from breakout_dqn.training.config import PQNConfig
    from breakout_dqn.training.rollout import Rollout

    headroom = inspect.signature(replay.check_fits_in_memory).parameters["headroom_bytes"].default
    for directory in with_object("Job", "breakout-dqn-train"):
        config = train_config(directory)
        assert isinstance(config, PQNConfig), f"{directory}: a replay to size the memory for"
        rollout = Rollout(config.rollout_steps, config.num_envs)  # np.empty: nothing is committed here
        need = sum(array.nbytes for array in vars(rollout).values()) + headroom
        assert need > MEASURED_PEAK_RSS_BYTES  # the estimate covers what the command was measured to use
        resources = container(pod_spec(find(render(directory), "Job", "breakout-dqn-train")), "train")["resources"]
        requests, limits = resources["requests"], resources["limits"]
        assert requests["memory"] == limits["memory"], directory  # reserved up front: a Guaranteed pod
        limit = gibibytes(limits["memory"]) * 1024**3
        assert need <= limit, (directory, need, limit)
        if "nvidia.com/gpu" not in limits:  # the GPU path adds CUDA's host memory, not measured
            assert limit <= 1.5 * need, (directory, need, limit)


def test_serving_probes_ports_and_grace_match_the_server() -> None:
    from breakout_dqn.serving.healthcheck import DEFAULT_PORT
    from breakout_dqn.serving.server import SERVICE_NAME

    objects = render("serve")
    deployment = find(objects, "Deployment", "breakout-dqn-serve")
    spec = pod_spec(deployment)
    serve = container(spec, "serve")
    (port,) = [port for port in serve["ports"] if port["name"] == "grpc"]
    assert port["containerPort"] == DEFAULT_PORT  # the image's $BREAKOUT_DQN_PORT
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert serve[probe]["grpc"]["port"] == DEFAULT_PORT, probe
    assert serve["startupProbe"]["grpc"]["service"] == serve["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    args = parse(command_line(spec, serve, objects))
    drain = serve["lifecycle"]["preStop"]["sleep"]["seconds"] + args.grace_s
    assert spec["terminationGracePeriodSeconds"] >= drain + 10, (spec["terminationGracePeriodSeconds"], drain)
    # Clients reconnect (and reach replicas the autoscaler added) well within the scale-down period.
    hpa = find(objects, "HorizontalPodAutoscaler", "breakout-dqn-serve")
    assert 0 < args.max_connection_age_s + args.max_connection_age_grace_s <= hpa["spec"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"], (args.max_connection_age_s, args.max_connection_age_grace_s)

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    for name, headless in (("breakout-dqn-serve", False), ("breakout-dqn-serve-headless", True)):
        service = find(objects, "Service", name)
        assert service["spec"]["selector"] == selector, name
        assert (service["spec"].get("clusterIP") == "None") is headless, name
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["grpc"], name
    assert find(objects, "PodDisruptionBudget", "breakout-dqn-serve")["spec"]["selector"]["matchLabels"] == selector
    target = find(objects, "HorizontalPodAutoscaler", "breakout-dqn-serve")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "breakout-dqn-serve")
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it


def check_model_version(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    script = DEPLOY / "serve" / "check_model_version.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env, "PYTHONPATH": str(REPO)}, cwd=REPO)


def test_serving_pins_the_model_the_image_ships() -> None:
    objects = render("serve")
    spec = pod_spec(find(objects, "Deployment", "breakout-dqn-serve"))
    env = container_env(spec, container(spec, "serve"), objects)
    pin = container_env(spec, container(spec, "check-model-version"), objects)
    assert pin.items() <= env.items() and set(pin) == {"BREAKOUT_DQN_MODEL", "BREAKOUT_DQN_MODEL_VERSION"}
    # The image copies models/ to /opt/breakout-dqn/models (WORKDIR) and serves that file by default.
    assert re.search(r"^WORKDIR /opt/breakout-dqn$", DOCKERFILE, re.MULTILINE)
    assert f"BREAKOUT_DQN_MODEL={env['BREAKOUT_DQN_MODEL']}" in DOCKERFILE
    shipped = REPO / Path(env["BREAKOUT_DQN_MODEL"]).relative_to("/opt/breakout-dqn")
    pinned = {**env, "BREAKOUT_DQN_MODEL": str(shipped)}
    result = check_model_version(pinned)
    assert result.returncode == 0, (
        f"{result.stderr}\nthe pin in deploy/k8s/serve/kustomization.yaml is not the shipped model's version")
    wrong = check_model_version({**pinned, "BREAKOUT_DQN_MODEL_VERSION": "0.1.0+000000000000"})
    assert wrong.returncode == 1
    assert env["BREAKOUT_DQN_MODEL_VERSION"] in wrong.stderr and "0.1.0+000000000000" in wrong.stderr
    printed = check_model_version({}, "--model", str(shipped), "--print")
    assert printed.stdout.strip() == env["BREAKOUT_DQN_MODEL_VERSION"]

