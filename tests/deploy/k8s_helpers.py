"""Render deploy/k8s with ``kubectl kustomize`` and read its objects as the kubelet would."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (it renders deploy/k8s)")

Object = dict[str, Any]


def kustomizations() -> list[str]:
    """Every kustomization under deploy/k8s that renders on its own (components do not), relative paths."""
    found = []
    for path in sorted(DEPLOY.rglob("kustomization.yaml")):
        if not re.search(r"^kind: Component$", path.read_text(), re.MULTILINE):
            found.append(str(path.parent.relative_to(DEPLOY)))
    return found


@functools.cache
def render(directory: str = ".") -> tuple[Object, ...]:
    """The objects of ``kubectl kustomize deploy/k8s/DIRECTORY``."""
    import yaml

    assert KUBECTL is not None
    result = subprocess.run([KUBECTL, "kustomize", str(DEPLOY / directory)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def find(objects: tuple[Object, ...], kind: str, name: str) -> Object:
    """The object of this kind whose name is ``name`` (ConfigMaps: ``name`` plus kustomize's hash suffix)."""
    for obj in objects:
        object_name = obj["metadata"]["name"]
        if obj["kind"] == kind and (object_name == name or re.fullmatch(rf"{re.escape(name)}-[a-z0-9]{{10}}",
                                                                           object_name)):
            return obj
    raise AssertionError(f"no {kind} {name} in {[(o['kind'], o['metadata']['name']) for o in objects]}")


def pod_spec(workload: Object) -> Object:
    return workload["spec"]["template"]["spec"]


def all_containers(spec: Object) -> list[Object]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(spec: Object, name: str) -> Object:
    matches = [c for c in all_containers(spec) if c["name"] == name]
    assert len(matches) == 1, f"container {name!r}: {[c['name'] for c in all_containers(spec)]}"
    return matches[0]


def container_env(spec: Object, cont: Object, objects: tuple[Object, ...], completion_index: int = 0) -> dict:
    """The container's environment as the kubelet builds it (envFrom, then env), for one completion index."""
    env: dict[str, str] = {}
    for source in cont.get("envFrom", []):
        config_map = find(objects, "ConfigMap", source["configMapRef"]["name"])
        env.update(config_map["data"])
    for variable in cont.get("env", []):
        if "value" in variable:
            env[variable["name"]] = expand(variable["value"], env)
            continue
        source = variable["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']", path
            env[variable["name"]] = str(completion_index)
        elif "resourceFieldRef" in source:
            resource = source["resourceFieldRef"]["resource"]  # e.g. limits.cpu
            kind, name = resource.split(".")
            env[variable["name"]] = str(cont["resources"][kind][name])
        else:
            raise AssertionError(f"unhandled env source {source}")
    return env


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion; a reference to an undefined variable fails here.

    (The kubelet would leave it as literal text, silently: e.g. ``--out=/models/runs/seed-$(SEED)``.)
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        assert name in env, f"$({name}) in {value!r} names no variable of the container"
        return env[name]

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, value)


def command_line(spec: Object, cont: Object, objects: tuple[Object, ...], completion_index: int = 0) -> list[str]:
    """``command`` + ``args`` with the variables expanded.

    A ``sh -c`` wrapper that runs ``exec "$0" "$@"`` (the gate's verify step saving its report, its
    average step after its checks) runs its ``args`` as the command line: those are returned.
    """
    env = container_env(spec, cont, objects, completion_index)
    command = cont["command"]
    if command[:2] == ["sh", "-c"]:
        assert 'exec "$0" "$@"' in command[2], command  # the wrapper runs args unchanged
        command = []
    return [expand(part, env) for part in [*command, *cont.get("args", [])]]


def local_command(spec: Object, cont: Object, objects: tuple[Object, ...], completion_index: int,
                  volume: Path) -> list[str]:
    """The container's command as this machine runs it: the claim's mount path mapped to ``volume``,
    ``breakout-dqn`` and ``python`` to this interpreter; a ``sh -c`` wrapper's script kept (mapped too)."""
    claims = {v["name"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
    (mount_path,) = [m["mountPath"] for m in cont["volumeMounts"] if m["name"] in claims]
    argv = [arg.replace(f"{mount_path}/", f"{volume}/") for arg in command_line(spec, cont, objects,
                                                                                  completion_index)]
    if argv[0] == "breakout-dqn":  # the console script of breakout_dqn.cli
        argv = [sys.executable, "-m", "breakout_dqn.cli", *argv[1:]]
    elif argv[0] == "python":  # the image's interpreter (its venv's, first on PATH)
        argv = [sys.executable, *argv[1:]]
    command = cont["command"]
    if command[:2] == ["sh", "-c"]:
        argv = ["sh", "-c", command[2].replace(f"{mount_path}/", f"{volume}/"), *argv]
    return argv


def policy_action(rules: list[dict[str, Any]], container_name: str, exit_code: int,
                  conditions: tuple[str, ...] = ()) -> str | None:
    """The podFailurePolicy's action, as the Job controller takes it (the first rule that matches), for a pod
    whose container ``container_name`` exited ``exit_code``; None: counted, retried."""
    for rule in rules:
        codes = rule.get("onExitCodes")
        if codes and codes.get("containerName", container_name) == container_name:
            listed = exit_code in codes["values"]
            if listed == (codes["operator"] == "In"):
                return rule["action"]
        for condition in rule.get("onPodConditions", []):
            if condition["type"] in conditions and condition.get("status", "True") == "True":
                return rule["action"]
    return None


def shell_redirect(cont: Object, env: dict[str, str]) -> str:
    """The file a ``sh -c 'exec "$0" "$@" > FILE'`` wrapper writes, its ``$VAR``s expanded from ``env``."""
    match = re.fullmatch(r'exec "\$0" "\$@" > "([^"]+)"', cont["command"][2])
    assert match, cont["command"]
    return re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)", lambda m: env[m.group(1)], match.group(1))


def with_object(kind: str, name: str) -> list[str]:
    """The kustomizations whose render holds this object."""
    return [d for d in kustomizations() if any(o["kind"] == kind and o["metadata"]["name"] == name for o in render(d))]


def train_config(directory: str) -> Any:
    """The TrainConfig the training Job's pods run, as `breakout-dqn train` resolves their command."""
    from breakout_dqn.training.arguments import build_parser
    from breakout_dqn.training.config import resolve

    objects = render(directory)
    spec = pod_spec(find(objects, "Job", "breakout-dqn-train"))
    argv = command_line(spec, container(spec, "train"), objects, completion_index=0)
    assert argv[:2] == ["breakout-dqn", "train"], argv
    return resolve(vars(build_parser().parse_args(argv[2:])))


def overlays() -> list[str]:
    """The kustomizations that get deployed: those under deploy/k8s/overlays/."""
    return [directory for directory in kustomizations() if directory.startswith("overlays/")]


def of_kind(objects: tuple[Object, ...], kind: str) -> list[Object]:
    return [obj for obj in objects if obj["kind"] == kind]


def claim_names(spec: Object) -> dict[str, str]:
    """Pod volume name -> the PersistentVolumeClaim it mounts."""
    return {volume["name"]: volume["persistentVolumeClaim"]["claimName"] for volume in spec.get("volumes", [])
            if "persistentVolumeClaim" in volume}


def gibibytes(quantity: str) -> float:
    """A storage or memory quantity such as ``30Gi`` or ``512Mi``, in bytes / 1024**3."""
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)", quantity)
    assert match, f"unsupported quantity {quantity!r}"
    return int(match.group(1)) * units[match.group(2)] / 1024**3
