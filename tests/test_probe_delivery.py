"""A first run with nothing to build: the default probe image is the public
Python image, and the run delivers the probes (the package and the lock's
posix_ipc and sysv_ipc wheels) through a ConfigMap that each probe container
unpacks, as its first step, into an emptyDir of the pod's own. An image built from
images/probe.Containerfile keeps its pods as they were."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import time
import uuid
import zipfile

import pytest

from cluster import probe_wheels
from podshare import MANAGED_BY, RUN_ID_LABEL, delivery
from podshare.cluster import Cluster
from podshare.factory import PodFactory
from podshare.images import DEFAULTS
from podshare.manifests import MANIFESTS, load_manifests, render
from podshare.settings import probes_from

from .conftest import PROJECT, RESTRICTED

IMAGE_PYTHON = "/usr/bin/python3"  # Debian's 3.11: the local cluster's stand-in for the public image is made of it


class Settings:
    probe_image = "registry.example/python:3.11"
    nginx_image = "nginx:1"
    image_pull_policy = "IfNotPresent"
    image_pull_secret = None


# ------------------------------------------------------------------ what podshare ships

def test_the_shipped_wheels_are_the_locked_versions_and_hashes(tmp_path):
    """podshare/probe_wheels holds posix_ipc and sysv_ipc for x86_64 and aarch64,
    each with a hash requirements.lock lists for its pinned version; a wheel that
    is not the locked one is named."""
    assert probe_wheels.problems() == []
    assert delivery.missing_wheels() == []
    tampered = tmp_path / "wheels"
    shutil.copytree(delivery.WHEELS, tampered)
    victim = next(tampered.glob("sysv_ipc-*x86_64*.whl"))
    victim.write_bytes(victim.read_bytes() + b"\0")
    next(tampered.glob("posix_ipc-*aarch64*.whl")).unlink()
    found = probe_wheels.problems(tampered)
    assert any(victim.name in p and "sha256" in p for p in found), found
    assert "no posix_ipc wheel for aarch64" in found, found


def test_the_delivered_probes_fit_one_configmap():
    """The unpacker, the probes and four wheels, well under the API's 1 MiB."""
    files = delivery.bundle()
    size = sum(len(data) for data in files.values())
    print(f"delivered probes: {size} bytes ({size / delivery.CONFIGMAP_LIMIT:.0%} of a ConfigMap's 1 MiB)")
    assert size < delivery.CONFIGMAP_LIMIT // 2
    assert set(files) == {"unpack.py", "probes.zip", *(w.name for w in delivery.WHEELS.glob("*.whl"))}
    assert all(re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", key) for key in files)  # valid ConfigMap keys
    names = zipfile.ZipFile(io.BytesIO(files["probes.zip"])).namelist()
    assert "probes/__main__.py" in names and "probes/serve.py" in names


def _unpack(tmp_path, *pre: str) -> tuple[subprocess.CompletedProcess, object]:
    bundle, target = tmp_path / "bundle", tmp_path / "unpacked"
    bundle.mkdir()
    target.mkdir()
    for name, data in delivery.bundle().items():
        (bundle / name).write_bytes(data)
    code = "; ".join([*pre, "import runpy, sys", "sys.argv = sys.argv[1:]",
                      "runpy.run_path(sys.argv[0], run_name='__main__')"])
    done = subprocess.run([IMAGE_PYTHON, "-S", "-c", code, str(bundle / "unpack.py"), str(bundle), str(target),
                           "--", IMAGE_PYTHON, "-S", "-c", "import probes, posix_ipc; print('exec', probes.__file__)"],
                          capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(target)})
    return done, target


def test_unpacked_probes_run_in_a_bare_python(tmp_path):
    """Unpacked by the image's python3 alone, the probes and this machine's IPC
    libraries import from the copy, with no site-packages at all (-S); then the
    unpacker becomes the command it was given; a second start finds the copy done."""
    done, target = _unpack(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"exec {target}/probes/__init__.py\n"
    told = json.loads(done.stderr)
    assert told["ok"] and told["machine"] == os.uname().machine and len(told["wheels"]) == 2
    print(f"unpacked on the host in {told['unpack_ms']} ms")
    imported = subprocess.run(
        [IMAGE_PYTHON, "-S", "-c", "import posix_ipc, sysv_ipc, probes, json; "
         "print(json.dumps([m.__file__ for m in (posix_ipc, sysv_ipc, probes)]))"],
        env={"PYTHONPATH": str(target)}, capture_output=True, text=True, cwd="/")
    assert imported.returncode == 0, imported.stderr
    assert all(path.startswith(str(target)) for path in json.loads(imported.stdout))
    assert list((target / "probes" / "__pycache__").glob("*.pyc")), "the probes were not compiled in the copy"
    again = subprocess.run([IMAGE_PYTHON, "-S", str(tmp_path / "bundle" / "unpack.py"), str(tmp_path / "bundle"),
                            str(target), "--", "true"], capture_output=True, text=True)
    assert again.returncode == 0 and again.stderr == "", "a restarted container unpacked again"


def test_a_machine_without_wheels_is_named_in_one_line(tmp_path):
    done, _ = _unpack(tmp_path, "import platform", "platform.machine = lambda: 'riscv64'")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "podshare: no posix_ipc or sysv_ipc wheel for this node's machine riscv64 in the delivered probes "
        "(there are wheels for x86_64 and aarch64)"]


# ------------------------------------------------------------------ the rendered pods

PROBE_POD_MANIFESTS = ["probe-pod.yaml", "stranger-pod.yaml",
                       *(f"patterns/{p.name}" for p in sorted((MANIFESTS / "patterns").glob("*.yaml")))]


def _pods(manifest: str) -> list[dict]:
    return [d for d in load_manifests(manifest) if d.get("kind", "Pod") == "Pod"]


@pytest.mark.parametrize("manifest", PROBE_POD_MANIFESTS)
def test_every_probe_container_unpacks_the_probes_first(manifest):
    """Rendered with the run's ConfigMap, every container of the probe image
    (native sidecars and loaders too) first unpacks the probes into its own
    directory, on its PYTHONPATH, then runs its own command and arguments; other
    images' containers are left alone; the copy is a volume of its own that no
    claim's volume is, and nothing else about the pod changes."""
    for template in _pods(manifest):
        body = render(template, name="p", settings=Settings(), run_id="r", probe_bundle="podshare-probes-x")
        spec = body["spec"]
        original = {c["name"]: c for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]}
        assert [c["name"] for c in spec.get("initContainers", [])] == [
            c["name"] for c in template["spec"].get("initContainers", [])]
        for c in spec.get("initContainers", []) + spec["containers"]:
            was = original[c["name"]]
            env = {e["name"]: e["value"] for e in c.get("env", [])}
            mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
            if was["image"] == "PROBE_IMAGE":
                mine = f"{delivery.DELIVERED}/{c['name']}"
                assert c["command"] == ["python3", f"{delivery.BUNDLE}/unpack.py", delivery.BUNDLE, mine, "--",
                                        *was["command"], *was.get("args", [])] and "args" not in c
                assert env["PYTHONPATH"] == mine
                assert mounts[delivery.VOLUME]["mountPath"] == delivery.DELIVERED
                assert mounts[delivery.BUNDLE_VOLUME] == {"name": delivery.BUNDLE_VOLUME,
                                                          "mountPath": delivery.BUNDLE, "readOnly": True}
                assert c.get("restartPolicy") == was.get("restartPolicy")
                assert c["securityContext"] == was["securityContext"]
            else:
                assert c["command"] == was["command"]
                assert "PYTHONPATH" not in env and delivery.VOLUME not in mounts
        claims_volumes = {v["name"] for v in template["spec"].get("volumes", [])}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert set(volumes) == claims_volumes | {delivery.VOLUME, delivery.BUNDLE_VOLUME}
        assert volumes[delivery.BUNDLE_VOLUME]["configMap"]["name"] == "podshare-probes-x"
        assert "emptyDir" in volumes[delivery.VOLUME]


@pytest.mark.parametrize("manifest", PROBE_POD_MANIFESTS)
def test_an_image_that_holds_the_probes_keeps_its_pods_as_they_were(manifest):
    for template in _pods(manifest):
        body = render(template, name="p", settings=Settings(), run_id="r")
        for rendered, was in zip(body["spec"].get("initContainers", []) + body["spec"]["containers"],
                                 template["spec"].get("initContainers", []) + template["spec"]["containers"]):
            assert rendered["command"] == was["command"] and rendered.get("args") == was.get("args")
            assert not any(e["name"] == "PYTHONPATH" for e in rendered.get("env", []))
        # no volume of the delivery's; an image volume of the probe image takes the run's image, as its containers do
        unplaced = [{k: v for k, v in vol.items() if k != "image"} for vol in template["spec"].get("volumes", [])]
        assert [{k: v for k, v in vol.items() if k != "image"} for vol in body["spec"].get("volumes", [])] == unplaced
        for vol in (v for v in body["spec"].get("volumes", []) if "image" in v):
            assert vol["image"] == {"reference": Settings().probe_image, "pullPolicy": Settings().image_pull_policy}


def test_the_default_image_gets_the_probes_from_the_run_and_any_other_is_taken_as_built():
    assert probes_from("auto", DEFAULTS["probe"]) == "configmap"
    assert probes_from("auto", "registry.example/probe:0.1.0") == "image"
    assert probes_from("configmap", "registry.example/python:3.11") == "configmap"
    assert probes_from("image", DEFAULTS["probe"]) == "image"
    assert DEFAULTS["probe"].startswith("docker.io/library/python:3.11.11-slim-bookworm@sha256:")
    base = re.search(r"^ARG BASE=(\S+)", (PROJECT / "images" / "probe.Containerfile").read_text(), re.M)[1]
    assert DEFAULTS["probe"].split("@")[0] == base, "the default is the image the Containerfile builds on"


# ------------------------------------------------------------------ on the cluster

@pytest.fixture
def run_namespace_of_its_own(kube, podshare_session):
    name = f"podshare-delivery-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(name, {**MANAGED_BY, RUN_ID_LABEL: podshare_session.run_id, **RESTRICTED})
    yield name
    kube.delete_namespace(name, timeout=120)


@pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER"), reason="needs the local cluster's images")
@pytest.mark.parametrize("mode", ["configmap", "image"])
def test_both_kinds_of_probe_image_run_the_probes(kube, podshare_session, run_namespace_of_its_own, mode):
    """The public Python image (the cluster has its stand-in under that name) with
    the probes from the run, and the built probe image as it was: the probe pod and
    its stranger start in a restricted namespace and answer verbs that need both
    IPC libraries; the ConfigMap is made only where needed and deleted with the pods."""
    image = DEFAULTS["probe"] if mode == "configmap" else os.environ["PROBE_IMAGE"]
    settings = dataclasses.replace(podshare_session.settings, probe_image=image, probes_from=mode,
                                   image_pull_policy="Never", node=None, namespace=run_namespace_of_its_own,
                                   pod_manifest="probe-pod.yaml", patterns_dir=None)
    cluster = Cluster(settings.kubeconfig, settings.kube_context, podshare_session.run_id)
    cluster.namespace = run_namespace_of_its_own
    factory = PodFactory(cluster, settings, uuid.uuid4().hex[:6])
    started = time.monotonic()
    probes, stranger = factory.start_probes()
    ready_s = time.monotonic() - started
    try:
        alpha = probes.container("alpha")
        key = int.from_bytes(os.urandom(3), "big") | 0x10000
        answers = [alpha.run("sysv-sem-create", key=key, value=1), alpha.run("sysv-remove", key=key, kind="sem"),
                   alpha.run("posix-shm-write", name=f"podshare-{key}", size=4096),
                   alpha.run("posix-unlink", name=f"podshare-{key}", kind="shm"),
                   stranger.container("stranger").run("identity")]
        assert all(a["ok"] for a in answers), answers
        served = alpha.run("identity")
        if mode == "configmap":
            told = json.loads(next(line for line in probes.main.log("alpha").splitlines() if '"unpack_ms"' in line))
            assert told["ok"] and told["python"].startswith("3.11.")
            print(f"{mode}: unpacked in {told['unpack_ms']} ms on {told['machine']}; pods ready in {ready_s:.1f} s")
            assert factory.others == [("ConfigMap", factory.probe_bundle)]
        else:
            assert factory.probe_bundle is None and factory.others == []
            print(f"{mode}: pods ready in {ready_s:.1f} s")
        assert served["ok"], served
    finally:
        factory.cleanup(keep=False)
    left = kube.core.list_namespaced_config_map(run_namespace_of_its_own,
                                                label_selector=f"{RUN_ID_LABEL}={podshare_session.run_id}").items
    assert left == [], [c.metadata.name for c in left]
