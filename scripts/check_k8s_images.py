"""The image references of rendered Kubernetes manifests, held to the registry policy (deploy/k8s).

``python scripts/check_k8s_images.py RENDERED.yaml [--require-digest]``: every container, init
container and image volume must name a registry host (a first path part with a dot, a colon or
``localhost``), so no reference falls back to a public hub's default. With ``--require-digest``
(what scripts/check-k8s.sh asks of every overlay, the kustomizations that get deployed) each must
also be pinned ``@sha256:<64 hex digits>``, so a pod never runs a tag that moved. Prints one line
per offending reference; exit 0 when there is none, 1 otherwise, 2 for an unreadable file.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
POD_SPEC_PATHS = {"Pod": ("spec",), "Job": ("spec", "template", "spec"), "CronJob": (
    "spec", "jobTemplate", "spec", "template", "spec")}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec inside a workload object (Deployment-like kinds included), or None."""
    path = POD_SPEC_PATHS.get(obj.get("kind", ""), ("spec", "template", "spec"))
    node: Any = obj
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) and "containers" in node else None


def references(objects: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(where, image reference) for every container, init container and image volume."""
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        owner = f"{obj['kind']} {obj['metadata']['name']}"
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield f"{owner} container {container['name']}", container["image"]
        for volume in spec.get("volumes", []):
            if "image" in volume:
                yield f"{owner} volume {volume['name']}", volume["image"]["reference"]


def problems(reference: str, require_digest: bool) -> list[str]:
    """What is wrong with one image reference under the policy (empty: nothing)."""
    found = []
    host = reference.split("/", 1)[0]
    if "/" not in reference or not ("." in host or ":" in host or host == "localhost"):
        found.append("no registry host (it would resolve to a public hub's name)")
    if require_digest and not DIGEST.search(reference):
        found.append("not pinned by a sha256 digest")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rendered", type=Path, help="kubectl kustomize output (YAML documents)")
    parser.add_argument("--require-digest", action="store_true", help="every image pinned @sha256:...")
    args = parser.parse_args(argv)
    try:
        objects = [doc for doc in yaml.safe_load_all(args.rendered.read_text()) if doc]
    except (OSError, yaml.YAMLError) as error:
        print(f"check_k8s_images: error: {args.rendered}: {error}", file=sys.stderr)
        return 2
    failed = 0
    for where, reference in references(objects):
        for problem in problems(reference, args.require_digest):
            print(f"{where}: {reference}: {problem}")
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
