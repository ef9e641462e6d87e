"""Air-gapped clusters: every image a run needs is named in one place
(podshare/images.py), `podshare images` lists them for mirroring, and
--registry makes a run pull all of them from the mirror."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from cluster.images import node_names  # how the local cluster names it
from podshare.images import DEFAULTS, mirrored

from .conftest import PROJECT, run_suites

PODSHARE = PROJECT / ".venv" / "bin" / "podshare"


def test_mirrored_names_keep_the_last_name_tag_and_digest():
    assert mirrored("podshare/probe:0.1.0", "reg.local:5000/mirror/") == "reg.local:5000/mirror/probe:0.1.0"
    assert mirrored("docker.io/library/nginx@sha256:ab", "reg.local/m") == "reg.local/m/nginx@sha256:ab"
    assert mirrored("nginx:1.27", None) == "nginx:1.27"


def test_the_local_cluster_names_the_public_image_as_the_node_looks_it_up():
    """A digest-pinned reference is resolved by containerd's CRI as name@digest (the
    tag dropped): the local cluster's stand-in carries that name and the tag's."""
    name, digest = DEFAULTS["probe"].split("@")
    assert node_names(DEFAULTS["probe"]) == [name, f"docker.io/library/python@{digest}"]
    assert node_names("reg.local:5000/m/nginx:1.27") == ["reg.local:5000/m/nginx:1.27"]


def test_podshare_images_lists_every_image_and_rewrites_them_all():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_IMAGE") and k != "PODSHARE_REGISTRY"}
    listed = subprocess.run([str(PODSHARE), "images"], capture_output=True, text=True, env=env, check=True)
    assert listed.stdout.split() == list(DEFAULTS.values())
    mirrored_list = subprocess.run([str(PODSHARE), "images", "--registry", "mirror.example/podshare"],
                                   capture_output=True, text=True, env=env, check=True).stdout.split()
    assert len(mirrored_list) == 3 and all(i.startswith("mirror.example/podshare/") for i in mirrored_list)


def test_no_image_is_named_anywhere_else():
    """Outside podshare/images.py no image reference is spelled out in the package,
    the manifests or the suites (manifests use the PROBE_IMAGE/NGINX_IMAGE placeholders)."""
    spelled = re.compile(r"(docker\.io/|podshare/(probe|runner):|nginx:\d)")
    found = [str(p.relative_to(PROJECT)) for folder in ("podshare", "manifests", "suites")
             for p in (PROJECT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".yaml")
             and p.name != "images.py" and spelled.search(p.read_text())]
    assert found == []


CONTAINERD = Path("/var/lib/podshare/cluster/containerd.sock")


def containerds() -> list[Path]:
    """Every node's containerd: the first node's, and those of a cluster with more nodes."""
    return [CONTAINERD, *sorted(CONTAINERD.parent.glob("nodes/*/containerd.sock"))]
MIRROR = "mirror.podshare.test/airgap"


@pytest.fixture
def mirror_names():
    """The local images also under the mirror's names, as an operator's mirror holds
    them: the public Python image (the cluster's stand-in for it) and nginx."""
    tagged = []
    for name, local in (("probe", node_names(DEFAULTS["probe"])[0]), ("nginx", os.environ["PODSHARE_NGINX_IMAGE"])):
        for target in node_names(mirrored(DEFAULTS[name], MIRROR)):  # as the node resolves it
            for containerd in containerds():
                subprocess.run(["ctr", "--address", str(containerd), "-n", "k8s.io", "images", "tag", "--force", local,
                                target], check=True, capture_output=True)
            tagged.append(target)
    yield tagged
    for containerd in containerds():
        subprocess.run(["ctr", "--address", str(containerd), "-n", "k8s.io", "images", "rm", *tagged],
                       capture_output=True)


@pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER"), reason="tags images in the local cluster's containerd")
@pytest.mark.usefixtures("kube")
def test_a_run_with_registry_pulls_every_image_from_the_mirror(tmp_path, mirror_names):
    """Without --probe-image or --nginx-image, with pull policy Never: the pods can
    only start if they ask for the mirror's names, which only the mirror has (the
    public Python image's too, its probes delivered by the run)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PODSHARE_PROBE_IMAGE", "PODSHARE_NGINX_IMAGE")}
    done = run_suites("--registry", MIRROR, "--image-pull-policy", "Never", "--reports-dir", str(tmp_path),
                      "-k", "test_hostname_is_the_pod_name_in_every_container or test_app_port_is_not_reachable",
                      env=env)
    results = json.loads((tmp_path / "results.json").read_text())
    assert done.returncode == 0 and [c["outcome"] for c in results["checks"]] == ["passed", "passed"], done.stdout[-2000:]
