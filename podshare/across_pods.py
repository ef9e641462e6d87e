"""Pods that mount one PersistentVolumeClaim together (issue 26 §2): what a
volume shares between pods, beside what it shares between one pod's containers.

For each --storage-class, made at the start of the run with its other pods:
- `one-node`: two pods on the probe pod's node with one ReadWriteOnce claim
  (any class: ReadWriteOnce is one node, not one pod);
- `two-nodes`: two pods with one ReadWriteMany claim, the first on that node,
  the second kept off it (network storage: each node its own client);
- a pod with a claim of its own of the class, on that node: the negative control.

A class that does not provision ReadWriteMany leaves the two-node pair
unstarted, and its claims say so in one line (waits.unbound_claims). The claims
are deleted with the pods at the end of the run, their volumes by the class's
reclaim policy (the run checks that none is left).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from . import MANAGED_BY, RUN_ID_LABEL
from .errors import HARNESS_ERRORS
from .manifests import CLAIM_SIZE, keep_off_nodes, load_manifest, render, with_volume_claim
from .pods import Pod, start_pods_for_claims
from .records import volume_id, volume_path

PLACEMENTS = {"one-node": "ReadWriteOnce", "two-nodes": "ReadWriteMany"}
PEER = "peer"  # the probe container of each pod (manifests/peer-pod.yaml)


@dataclass
class AcrossPods:
    """The pods of one volume kind: per placement, the pod that writes first and
    the other; and the pod with a claim of its own."""
    pairs: dict[str, tuple[Pod, Pod]]
    own: Pod

    def pods(self) -> list[Pod]:
        return [*(p for pair in self.pairs.values() for p in pair), self.own]


def claim_body(kind: str, access_mode: str, name: str, run_id: str) -> dict:
    """A PersistentVolumeClaim of the kind's class ("pvc:default": the cluster's
    default, filled in by the API server's DefaultStorageClass admission)."""
    spec = {"accessModes": [access_mode], "resources": {"requests": {"storage": CLAIM_SIZE}}}
    storage_class = kind.removeprefix("pvc:")
    if storage_class != "default":
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": {**MANAGED_BY, RUN_ID_LABEL: run_id}}, "spec": spec}


def with_claim(template: dict, kind: str, claim: str) -> dict:
    """The peer pod with the claim mounted where the volume claims look for it."""
    body = {**template, "spec": {**template["spec"]}}
    name = volume_id(kind)
    body["spec"]["volumes"] = [*template["spec"].get("volumes", []),
                               {"name": name, "persistentVolumeClaim": {"claimName": claim}}]
    body["spec"]["containers"] = [{**c, "volumeMounts": [*c.get("volumeMounts", []),
                                                         {"name": name, "mountPath": volume_path(kind)}]}
                                  for c in template["spec"]["containers"]]
    return body


def make(factory, kind: str, node: str) -> AcrossPods:
    """Create the claims and pods of one volume kind (not waited for: they start
    beside the run's other pods). `factory` makes, names and cleans them up."""
    template = load_manifest("peer-pod.yaml")
    # short names: a pod's name is also its label's value (63 characters at most), and the
    # factory's suffix carries the node, RuntimeClass and run; the kind as a short digest
    tag = hashlib.sha256(kind.encode()).hexdigest()[:4]
    pairs = {}
    for placement, mode in PLACEMENTS.items():
        short = placement[:3]  # one, two
        claim = f"podshare-x{short}-{tag}-{factory.suffix}"
        body = with_claim(template, kind, claim)
        first = factory.pod(body, f"podshare-x{short}1-{tag}", node=node)
        second = factory.pod(body, f"podshare-x{short}2-{tag}", node=node)
        if placement == "two-nodes":
            second.body["spec"].pop("tolerations", None)  # not onto a pool kept apart by a taint (a sandbox)
            keep_off_nodes(second.body["spec"], [node])
        pairs[placement] = (first, second)
        try:
            factory.kube.create(factory.namespace, render(claim_body(kind, mode, claim, factory.cluster.run_id),
                                                          name=claim, settings=factory.settings,
                                                          run_id=factory.cluster.run_id))
            factory.others.append(("PersistentVolumeClaim", claim))
        except HARNESS_ERRORS as exc:  # refused (RBAC, quota): the pair's claims fail with it, not the run
            first.start_failure = second.start_failure = f"could not make PersistentVolumeClaim {claim}: {exc}"
            first.start_outside = second.start_outside = True  # the cluster's doing: could not check, not failed
    own = factory.pod(with_volume_claim(template, kind, factory.cluster.run_id), f"podshare-xown-{tag}",
                      node=node)
    made = AcrossPods(pairs, own)
    start_pods_for_claims(made.pods(), HARNESS_ERRORS, wait=False)
    return made
