"""Image volumes (KEP-4639): an OCI image mounted as a volume, a model or a data
set shipped the way the app is. Mounted into both containers of a pod, it is
one tree: the same content in each, read-only in each (the write fails with
EROFS, while the same write into an emptyDir beside it succeeds), and a subPath
of it is that tree's directory. The image is the run's probe image, so nothing
else need be pulled.

A node whose runtime cannot mount image volumes (containerd before 2.1,
cri-dockerd) is not applicable, in one line that names the runtime; elsewhere a
pod that cannot start names the kubelet's words."""
from __future__ import annotations

import pytest

from podshare.evidence import could_not, describe, failed_with, stranger_sees

pytestmark = [pytest.mark.volume, pytest.mark.needs("image volumes"),
              pytest.mark.manifest("patterns/image-volume.yaml"), pytest.mark.volume_kind("image")]

WHOLE, ETC, SCRATCH = "/image", "/image-etc", "/scratch"  # the image; its etc/ by subPath (beta); an emptyDir


@pytest.fixture(scope="module")
def image_pod(pattern_pods):
    return pattern_pods["Pod/podshare-image-volume"]


def volume_status(pod) -> dict[str, str | None]:
    """What the API says each container mounted (the image's digest where the
    kubelet reports it: status.containerStatuses[].volumeMounts[].volumeStatus)."""
    seen: dict[str, str | None] = {}
    for cs in pod.kube.read_pod(pod.namespace, pod.name).status.container_statuses or []:
        for mount in cs.volume_mounts or []:
            if mount.name == "image":
                image = mount.volume_status and mount.volume_status.image
                seen[f"{cs.name}:{mount.mount_path}"] = image.image_ref if image else None
    return seen


def test_image_volume_is_one_tree_in_both_containers(image_pod, stranger, evidence):
    """alpha and beta see the same image volume (the probe image itself): one
    digest over every path, mode and size of its usr/bin/ and one over every
    file's content in its etc/; the stranger pod, which does not mount it, has
    no such tree."""
    alpha, beta = image_pod.container("alpha"), image_pod.container("beta")
    # Parts, not the whole 200 MiB: a sandbox's file proxy takes 18 s to stat it all (gVisor, measured)
    steps = {
        "alpha_tree": alpha.run("tree-digest", path=f"{WHOLE}/usr/bin"),
        "beta_tree": beta.run("tree-digest", path=f"{WHOLE}/usr/bin"),
        "alpha_etc": alpha.run("tree-digest", path=f"{WHOLE}/etc", content=True),
        "beta_etc": beta.run("tree-digest", path=f"{WHOLE}/etc", content=True),
        "alpha_mount": alpha.run("filesystem", path=WHOLE),
        "beta_mount": beta.run("filesystem", path=WHOLE),
        "stranger": stranger.run("list", path=WHOLE),
    }
    evidence.update(steps, volume_status=volume_status(image_pod))
    first, second = steps["alpha_tree"], steps["beta_tree"]
    assert first["ok"], could_not("alpha", f"the image volume's {WHOLE}/usr/bin", first)
    assert second["ok"], could_not("beta", f"the image volume's {WHOLE}/usr/bin", second)
    assert first["files"] > 0, f"alpha's image volume at {WHOLE} has no usr/bin: the image's layers are not there"
    assert (first["digest"], first["files"]) == (second["digest"], second["files"]), (
        f"alpha and beta see two different trees at {WHOLE}/usr/bin: {first['files']} files "
        f"({first['bytes']} bytes) against {second['files']} ({second['bytes']} bytes)")
    etc_a, etc_b = steps["alpha_etc"], steps["beta_etc"]
    assert etc_a["ok"] and etc_b["ok"], could_not("alpha" if not etc_a["ok"] else "beta", f"{WHOLE}/etc",
                                                  etc_b if etc_a["ok"] else etc_a)
    assert etc_a["digest"] == etc_b["digest"], (
        f"alpha and beta read different contents in {WHOLE}/etc ({etc_a['bytes']} against {etc_b['bytes']} bytes)")
    assert failed_with(steps["stranger"], "ENOENT"), (
        stranger_sees("the stranger pod lists the image volume", steps["stranger"]))


@pytest.mark.parametrize("who", ["alpha", "beta"])
def test_image_volume_is_read_only(image_pod, who, ipc_name, evidence):
    """A write into the image volume fails with EROFS in each container (the
    kubelet mounts it read-only); the same write into an emptyDir of the same
    pod succeeds, so the refusal is the volume's."""
    container = image_pod.container(who)
    steps = {
        "image_write": container.run("write", path=f"{WHOLE}/{ipc_name}", size=4096, seed=ipc_name),
        "scratch_write": container.run("write", path=f"{SCRATCH}/{ipc_name}", size=4096, seed=ipc_name),
        "mount": container.run("filesystem", path=WHOLE),
    }
    evidence.update(steps)
    assert steps["scratch_write"]["ok"], could_not(who, f"the emptyDir at {SCRATCH}", steps["scratch_write"])
    written = steps["image_write"]
    assert not written["ok"], f"{who} wrote into the image volume at {WHOLE}: it is not read-only"
    assert failed_with(written, "EROFS"), (
        f"{who}'s write into the image volume failed with {describe(written)}, not EROFS (a read-only file system)")


def test_image_volume_subpath_is_the_image_directory(image_pod, evidence):
    """beta's subPath mount of the image's etc/ is the same tree as etc/ in alpha's
    whole mount, and read-only too."""
    alpha, beta = image_pod.container("alpha"), image_pod.container("beta")
    steps = {
        "alpha_etc": alpha.run("tree-digest", path=f"{WHOLE}/etc", content=True),
        "beta_subpath": beta.run("tree-digest", path=ETC, content=True),
        "beta_write": beta.run("write", path=f"{ETC}/podshare-write", size=16, seed="subpath"),
    }
    evidence.update(steps)
    whole, sub = steps["alpha_etc"], steps["beta_subpath"]
    assert whole["ok"], could_not("alpha", f"{WHOLE}/etc", whole)
    assert sub["ok"], could_not("beta", f"its subPath mount of the image's etc/ at {ETC}", sub)
    assert (sub["digest"], sub["files"]) == (whole["digest"], whole["files"]), (
        f"beta's subPath mount {ETC} is not the image's etc/: {sub['files']} files against {whole['files']} "
        f"in alpha's {WHOLE}/etc")
    assert failed_with(steps["beta_write"], "EROFS"), (
        f"beta's write into the subPath mount {ETC} " + ("succeeded: it is not read-only" if steps["beta_write"]["ok"]
                                                         else f"failed with {describe(steps['beta_write'])}, not EROFS"))
