"""Identity: the pod's containers are one host to the network and to IPC,
but each keeps its own file system view and, by default, its own processes."""
import pytest

from podshare.evidence import describe

pytestmark = pytest.mark.identity


def test_hostname_is_the_pod_name_in_every_container(probe_set, stranger_pod, alpha, beta, stranger, evidence):
    """Every container's hostname is the pod's name (one UTS namespace per pod)."""
    answers = {c.name: c.run("identity") for c in (alpha, beta, stranger)}
    evidence["identity"] = answers
    for name, answer in answers.items():
        assert answer["ok"], f"{name} could not tell its hostname: {describe(answer)}"
    hostnames = {name: answer["hostname"] for name, answer in answers.items()}
    evidence["hostnames"] = hostnames
    for name in ("alpha", "beta"):
        assert hostnames[name] == probe_set.name, \
            f"{name}'s hostname is {hostnames[name]!r}, not the pod's name {probe_set.name!r}"
    assert hostnames["stranger"] == stranger_pod.name != probe_set.name, (
        f"the stranger pod's hostname is {hostnames['stranger']!r}, not its own name {stranger_pod.name!r}")


def test_net_ipc_and_uts_namespaces_are_shared_within_the_pod_only(alpha, beta, stranger, evidence):
    """alpha and beta are in the same net, ipc and uts namespaces (same kernel,
    device and inode); the stranger pod on the same node is in none of them.

    Broken in the wild by dockerd's `default-ipc-mode: private` (separate IPC) and by
    sandboxed runtimes that give each container its own kernel view."""
    seen = {c.name: c.run("identity") for c in (alpha, beta, stranger)}
    ns = {name: answer["namespace_ids"] for name, answer in seen.items()}
    evidence.update(namespace_ids=ns, kernels={name: answer["kernel"] for name, answer in seen.items()},
                    kernel_releases={name: answer["kernel_release"] for name, answer in seen.items()})
    _assert_identifiable(seen)
    for kind in ("net", "ipc", "uts"):
        missing = [name for name in ns if kind not in ns[name]]
        assert not missing, (
            f"/proc/self/ns/{kind} does not exist in {', '.join(missing)}: the {kind} namespace cannot be identified")
        assert ns["alpha"][kind] == ns["beta"][kind], f"alpha and beta have different {kind} namespaces"
        assert ns["stranger"][kind] != ns["alpha"][kind], f"the stranger pod shares the {kind} namespace"


def test_mount_and_pid_namespaces_are_per_container(probe_set, alpha, beta, evidence):
    """Each container has its own mount namespace, and its own pid namespace unless
    the pod sets shareProcessNamespace."""
    seen = {c.name: c.run("identity") for c in (alpha, beta)}
    ns = {name: answer["namespace_ids"] for name, answer in seen.items()}
    share_pid = bool(probe_set.body["spec"].get("shareProcessNamespace"))
    evidence.update(namespace_ids=ns, share_process_namespace=share_pid,
                    kernel_releases={name: answer["kernel_release"] for name, answer in seen.items()})
    _assert_identifiable(seen)
    for kind in ("mnt", "pid"):
        missing = [name for name in ns if kind not in ns[name]]
        assert not missing, (
            f"/proc/self/ns/{kind} does not exist in {', '.join(missing)}: the {kind} namespace cannot be identified")
    assert ns["alpha"]["mnt"] != ns["beta"]["mnt"], "alpha and beta share one mount namespace"
    assert (ns["alpha"]["pid"] == ns["beta"]["pid"]) is share_pid, (
        f"alpha and beta {'do not share' if share_pid else 'share'} a pid namespace, "
        f"though the pod's shareProcessNamespace is {share_pid}")


def _assert_identifiable(seen: dict) -> None:
    """A namespace is identified by its kernel (boot id), device and inode; a
    runtime that hides the kernel's identity makes the comparison meaningless."""
    anonymous = [name for name, answer in seen.items() if not answer["kernel"]]
    assert not anonymous, (
        f"{', '.join(anonymous)} see no kernel boot id (/proc/sys/kernel/random/boot_id), so their namespaces "
        f"cannot be told apart from another kernel's: this runtime does not expose namespace identity")
