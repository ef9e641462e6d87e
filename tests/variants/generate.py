"""Writes the broken variants of manifests/probe-pod.yaml used by the negative
controls; run it after changing the probe pod:  python tests/variants/generate.py"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
MANIFESTS = HERE.parent.parent / "manifests"
BASE = yaml.safe_load((MANIFESTS / "probe-pod.yaml").read_text())


def save(name: str, docs: list[dict], why: str) -> None:
    header = "".join(f"# {line}\n" for line in why.strip().splitlines())
    (HERE / name).write_text(header + yaml.safe_dump_all(docs, sort_keys=False))


def variant(change) -> dict:
    doc = copy.deepcopy(BASE)
    change(doc["spec"])
    return doc


def split_volumes(spec):
    spec["containers"][1]["volumeMounts"] = [{"name": "beta-disk", "mountPath": "/data/disk"},
                                             {"name": "beta-memory", "mountPath": "/data/memory"}]
    spec["volumes"] += [{"name": "beta-disk", "emptyDir": {}},
                        {"name": "beta-memory", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]


def private_dev_shm(spec):
    spec["containers"][0]["volumeMounts"] = spec["containers"][0]["volumeMounts"] + [
        {"name": "alpha-shm", "mountPath": "/dev/shm"}]
    spec["volumes"] += [{"name": "alpha-shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}]


def renamed_volumes(spec):
    names = {"disk": "scratch", "memory": "ram"}
    for c in spec["containers"]:
        c["volumeMounts"] = [{**m, "name": names[m["name"]]} for m in c["volumeMounts"]]
    for v in spec["volumes"]:
        v["name"] = names[v["name"]]


def memory_without_medium(spec):
    spec["volumes"][1]["emptyDir"] = {"sizeLimit": "16Mi"}


def host_path(spec):
    spec["volumes"][0] = {"name": "disk", "hostPath": {"path": "/var/lib/podshare/variant-hostpath",
                                                       "type": "Directory"}}


STRANGER_SHARED = "/var/lib/podshare/variant-stranger"


def shares_with_the_stranger(spec):
    """The node's network and IPC namespaces, and host directories for both
    volumes: whatever the probe pod shares, a pod doing the same sees too."""
    spec.update(hostNetwork=True, hostIPC=True)
    spec["volumes"] = [{"name": name, "hostPath": {"path": f"{STRANGER_SHARED}/{name}", "type": "Directory"}}
                       for name in ("disk", "memory")]


def stranger_that_shares() -> list[dict]:
    stranger = yaml.safe_load((MANIFESTS / "stranger-pod.yaml").read_text())
    shares_with_the_stranger(stranger["spec"])
    return [variant(shares_with_the_stranger), stranger]


def split_pods() -> list[dict]:
    docs = []
    for i, container in enumerate(BASE["spec"]["containers"]):
        doc = copy.deepcopy(BASE)
        doc["metadata"]["name"] = container["name"]
        doc["spec"]["containers"] = [doc["spec"]["containers"][i]]
        docs.append(doc)
    return docs


def beta_volumes_read_only(spec):
    spec["containers"][1]["volumeMounts"] = [{**m, "readOnly": True} for m in spec["containers"][1]["volumeMounts"]]


SECOND_UID = 65533


def beta_as_another_uid(spec):
    spec["containers"][1]["securityContext"] = {**spec["containers"][1]["securityContext"],
                                                "runAsUser": SECOND_UID, "runAsGroup": SECOND_UID}


def small_shared_dev_shm(spec):
    for c in spec["containers"]:
        c["volumeMounts"] = c["volumeMounts"] + [{"name": "dev-shm", "mountPath": "/dev/shm"}]
    spec["volumes"] += [{"name": "dev-shm", "emptyDir": {"medium": "Memory", "sizeLimit": "512Ki"}}]


def broken_pattern(name: str, change, why: str) -> None:
    """A pattern manifest with the promise it relies on broken, for --patterns-dir."""
    docs = list(yaml.safe_load_all((MANIFESTS / "patterns" / name).read_text()))
    pod = next(d for d in docs if d["kind"] == "Pod")
    change(pod["spec"], docs)
    (HERE / "broken-patterns").mkdir(exist_ok=True)
    save(f"broken-patterns/{name}", docs, why)


def proxy_app_elsewhere(spec, docs):
    """nginx's app moves to a pod of its own: 127.0.0.1:5000 is no longer the app."""
    app = next(c for c in spec["containers"] if c["name"] == "app")
    spec["containers"].remove(app)
    other = copy.deepcopy(next(d for d in docs if d["kind"] == "Pod"))
    other["metadata"]["name"] = "podshare-proxy-app"
    other["spec"]["containers"] = [app]
    other["spec"].pop("volumes", None)
    docs.append(other)


def watcher_volume_of_its_own(spec, docs):
    watcher = next(c for c in spec["containers"] if c["name"] == "watcher")
    watcher["volumeMounts"] = [{**m, "name": "watcher-own"} for m in watcher["volumeMounts"]]
    spec["volumes"].append({"name": "watcher-own", "emptyDir": {}})


def loader_volume_not_shared(spec, docs):
    for c in spec["containers"]:
        c["volumeMounts"] = [{**m, "name": "main-own"} for m in c["volumeMounts"]]
    spec["volumes"].append({"name": "main-own", "emptyDir": {}})


def sqlite_sidecar_volumes_of_its_own(spec, docs):
    """The sidecar mounts emptyDirs of its own at the same paths: two databases of one name."""
    sidecar = next(c for c in spec["containers"] if c["name"] == "sidecar")
    sidecar["volumeMounts"] = [{**m, "name": f"sidecar-{m['name']}"} for m in sidecar["volumeMounts"]]
    spec["volumes"] += [{**v, "name": f"sidecar-{v['name']}"} for v in copy.deepcopy(spec["volumes"])]


def sidecar_restart_policy_dropped(spec, docs):
    spec["initContainers"][0].pop("restartPolicy")  # what a webhook unaware of the field did
    spec["initContainers"][0].pop("startupProbe")  # else the API refuses the pod (also a failure)


def beta_settings_never_updated(spec, docs):
    """beta's volumes take a copy of the ConfigMap that the harness never updates."""
    settings = next(d for d in docs if d["kind"] == "ConfigMap")
    frozen = copy.deepcopy(settings)
    frozen["metadata"]["name"] = f"{settings['metadata']['name']}-frozen"
    docs.insert(1, frozen)
    spec["volumes"] += [{"name": "frozen", "configMap": {"name": frozen["metadata"]["name"]}},
                        {"name": "frozen-projected",
                         "projected": {"sources": [{"configMap": {"name": frozen["metadata"]["name"]}}]}}]
    beta = next(c for c in spec["containers"] if c["name"] == "beta")
    beta["volumeMounts"] = [{**m, "name": {"settings": "frozen", "settings-projected": "frozen-projected"}[m["name"]]}
                            for m in beta["volumeMounts"]]


def beta_same_subpath_elsewhere(spec, docs):
    beta = next(c for c in spec["containers"] if c["name"] == "beta")
    beta["volumeMounts"] = [{**m, "subPath": "same-beta"} if m.get("subPath") == "same" else m
                            for m in beta["volumeMounts"]]


def sidecar_without_its_rule(spec, docs):
    spec["initContainers"][1].pop("restartPolicyRules")


def process_namespace_not_shared(spec, docs):
    spec.pop("shareProcessNamespace")


if __name__ == "__main__":
    broken_pattern("reverse-proxy.yaml", proxy_app_elsewhere, """
Broken on purpose: the app nginx proxies to (127.0.0.1:5000) runs in another
pod, as if the pod's containers did not share localhost. nginx's readiness
(through the proxy) never succeeds: every reverse-proxy claim must fail.""")
    broken_pattern("log-watcher.yaml", watcher_volume_of_its_own, """
Broken on purpose: the watcher mounts an emptyDir of its own at the log path,
as if volume writes (and their inotify events) did not cross containers.""")
    broken_pattern("data-loader.yaml", loader_volume_not_shared, """
Broken on purpose: the main containers mount another emptyDir than the init
container filled: the byte-exact read at start must fail.""")
    broken_pattern("native-sidecar.yaml", sidecar_restart_policy_dropped, """
Broken on purpose: the sidecar's restartPolicy: Always is gone, as when an
admission webhook dropped the field it did not know: the sidecar becomes a
plain init container that never exits, and the pod stalls in init.""")
    broken_pattern("configmap-updates.yaml", beta_settings_never_updated, """
Broken on purpose: beta's configMap and projected volumes come from a copy of
the ConfigMap that the harness never updates, as if the update did not reach
beta: the update claims (configMap, projected) must fail naming beta, the step
(wait-update) and ETIMEDOUT; the subPath and inotify claims (alpha's) pass.""")
    broken_pattern("subpaths.yaml", beta_same_subpath_elsewhere, """
Broken on purpose: beta mounts subPath same-beta where alpha mounts same, as if
one subPath were not shared: the shared-subPath claim must fail, beta's open of
alpha's file ENOENT; the isolation claim passes.""")
    broken_pattern("restart-all-sidecar.yaml", sidecar_without_its_rule, """
Broken on purpose: the sidecar has no RestartAllContainers rule, so its exit
with 42 restarts the sidecar alone (restartPolicy Always): the claim that every
container restarts must fail naming alpha's and beta's unchanged boot ids.""")
    broken_pattern("shared-pid.yaml", process_namespace_not_shared, """
Broken on purpose: shareProcessNamespace is gone, so each container has a PID
namespace of its own, whose PID 1 is its own agent: the claim that PID 1 is the
pod's sandbox and both containers see both agents must fail; each container's
own process still gets its SIGTERM on deletion.""")
    broken_pattern("sqlite.yaml", sqlite_sidecar_volumes_of_its_own, """
Broken on purpose: the sidecar mounts emptyDirs of its own at /data/disk and
/data/memory, as if the volume were not shared: it opens another database of
the same name. It never reads the app's rows, its backup is not where the app
looks, and the app's lock is nowhere it can see; only the claim that nothing
is refused as locked holds (nothing contends).""")
    save("split-volumes.yaml", [variant(split_volumes)], """
Broken on purpose: beta mounts emptyDirs of its own at the same paths,
so nothing written in a volume by alpha reaches beta. The volume claims must fail.""")
    save("private-dev-shm.yaml", [variant(private_dev_shm)], """
Broken on purpose: alpha has a /dev/shm of its own (as with a per-container
/dev/shm). POSIX shm_open objects and named semaphores, which live there,
must no longer be shared; System V objects and POSIX queues still are.""")
    save("split-pods.yaml", split_pods(), """
Broken on purpose: alpha and beta in two pods instead of one. Every claim
about what the containers of one pod share must fail; only the per-container
ones (mount and pid namespaces, the Memory volume's own size limit) pass.""")
    save("host-network.yaml", [variant(lambda s: s.update(hostNetwork=True))], """
Broken on purpose: hostNetwork. The containers still share a network namespace,
but it is the node's, and so is the hostname: the hostname claim must fail.
Needs --pod-security privileged.""")
    save("host-ipc.yaml", [variant(lambda s: s.update(hostIPC=True))], """
Broken on purpose: hostIPC. System V objects and /dev/shm are the node's, so
they outlive the pod: the recreated-pod claim must fail. Needs --pod-security privileged.""")
    save("stranger-shares.yaml", stranger_that_shares(), f"""
Broken on purpose: the negative control itself. The probe pod and the stranger
pod (the container named stranger) both use the node's network and IPC
namespaces and the same host directories ({STRANGER_SHARED}/disk and /memory,
writable by uid 65532) as volumes, so the stranger sees everything the probe
pod shares: every claim's stranger-side check must fail, with the stranger named.
Needs --pod-security privileged.""")
    save("renamed-volumes.yaml", [variant(renamed_volumes)], """
Not broken: the probe pod's volumes are named scratch and ram instead of disk
and memory. Claims learn a volume from the pod as the API returns it, by mount
path: every volume claim must pass.""")
    save("memory-without-medium.yaml", [variant(memory_without_medium)], """
Broken on purpose: the volume mounted at /data/memory has no medium: Memory, so
it is on the node's disk: the memory-volume claim must fail, with a sentence.""")
    save("read-only-for-beta.yaml", [variant(beta_volumes_read_only)], """
Broken on purpose: beta mounts both shared volumes readOnly. It still reads
what alpha writes, but cannot open alpha's files for writing (EROFS): the
claims where beta writes, locks or maps must fail saying beta could not open
(or rename) the file, and nothing more.""")
    save("second-uid.yaml", [variant(beta_as_another_uid)], f"""
Broken on purpose: beta runs as another uid and gid ({SECOND_UID}; the pod's
fsGroup 65532 stays its supplementary group). alpha's files (0644) and IPC
objects (0600) are alpha's own: beta's opens for writing and of the IPC objects
fail with EACCES, and each such claim must say so, with the step.""")
    save("full-dev-shm.yaml", [variant(small_shared_dev_shm)], """
Broken on purpose: /dev/shm is a 512 KiB Memory emptyDir shared by both
containers. alpha's 1 MiB shm_open object is mapped, and the write past the
512 KiB kills alpha's probe with SIGBUS: the claim must say so, with the
step and what the tmpfs shows.""")
    save("runtime-class-in-manifest.yaml", [variant(lambda s: s.update(runtimeClassName="gvisor"))], """
Not broken: the manifest itself sets runtimeClassName: gvisor (no
--runtime-class). The pods run under it, and results.json and the report's
header must name the class and its handler, read back from the API.""")
    save("host-path.yaml", [variant(host_path)], """
Broken on purpose: a hostPath directory in place of the disk emptyDir. Still
shared by the containers, but it outlives the pod: the recreated-pod claim must
fail. The directory must exist and be writable by uid 65532. Needs --pod-security privileged.""")
