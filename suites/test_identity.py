"""Identity: the pod's containers are one host to the network and to IPC,
but each keeps its own file system view and, by default, its own processes."""
import pytest

pytestmark = pytest.mark.identity


def test_hostname_is_the_pod_name_in_every_container(probe_pod, stranger_pod, alpha, beta, stranger, evidence):
    """Every container's hostname is the pod's name (one UTS namespace per pod)."""
    hostnames = {c.name: c.run("identity")["hostname"] for c in (alpha, beta, stranger)}
    evidence["hostnames"] = hostnames
    for name in ("alpha", "beta"):
        assert hostnames[name] == probe_pod.name, \
            f"{name}'s hostname is {hostnames[name]!r}, not the pod's name {probe_pod.name!r}"
    assert hostnames["stranger"] == stranger_pod.name != probe_pod.name


def test_net_ipc_and_uts_namespaces_are_shared_within_the_pod_only(alpha, beta, stranger, evidence):
    """alpha and beta are in the same net, ipc and uts namespaces (same inodes); the
    stranger pod on the same node is in none of them.

    Broken in the wild by dockerd's `default-ipc-mode: private` (separate IPC) and by
    sandboxed runtimes that give each container its own kernel view."""
    ns = {c.name: c.run("identity")["namespaces"] for c in (alpha, beta, stranger)}
    evidence["namespace_inodes"] = ns
    for kind in ("net", "ipc", "uts"):
        assert ns["alpha"][kind] == ns["beta"][kind], f"alpha and beta have different {kind} namespaces"
        assert ns["stranger"][kind] != ns["alpha"][kind], f"the stranger pod shares the {kind} namespace"


def test_mount_and_pid_namespaces_are_per_container(probe_pod, alpha, beta, evidence):
    """Each container has its own mount namespace, and its own pid namespace unless
    the pod sets shareProcessNamespace."""
    ns = {c.name: c.run("identity")["namespaces"] for c in (alpha, beta)}
    share_pid = bool(probe_pod.body["spec"].get("shareProcessNamespace"))
    evidence.update(namespace_inodes=ns, share_process_namespace=share_pid)
    assert ns["alpha"]["mnt"] != ns["beta"]["mnt"]
    assert (ns["alpha"]["pid"] == ns["beta"]["pid"]) is share_pid
