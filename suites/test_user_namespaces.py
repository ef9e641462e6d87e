"""User namespaces: a pod with `hostUsers: false` (--user-namespaces on or both)
has one user namespace of its own, shared by its containers and by no other
pod: its uid and gid maps are not the host's identity map, alpha and beta have
the same ones, the stranger pod another. A file a container writes in an
emptyDir belongs, in every container, to the uid that wrote it (the kubelet's
idmapped mounts; without them a non-root container in a user namespace sees
its volume owned by nobody and cannot write). Broken in the wild: runc's
mqueue mount and containerd's /dev/shm bind in user namespaces, runc 1.2.0's
mqueue regression (the other suites' claims, run with --user-namespaces).

The first two claims are about pods with hostUsers: false and are collected
only for them; the ownership claim holds for every pod."""
import pytest

from podshare.evidence import describe

pytestmark = pytest.mark.userns

# The host's own user namespace maps every id to itself.
IDENTITY_MAP = [[0, 0, 4294967295]]


def _maps(*containers) -> dict[str, dict]:
    answers = {c.name: c.run("user-namespace") for c in containers}
    for name, answer in answers.items():
        assert answer["ok"], f"{name} could not read its uid and gid maps: {describe(answer)}"
    return answers


def _host_id(id_map: list[list[int]], inside: int) -> int | None:
    """What an id inside the namespace is outside it (on the host), per the map."""
    return next((outside + inside - first for first, outside, count in id_map if first <= inside < first + count), None)


@pytest.mark.user_namespaced
def test_every_container_is_in_a_user_namespace_not_the_hosts(alpha, beta, stranger, evidence):
    """With hostUsers: false, every container runs in a user namespace that is not
    the host's: its /proc/self/uid_map and gid_map are not the identity map, and
    the pod's root (uid 0 inside) is not the host's root."""
    seen = _maps(alpha, beta, stranger)
    evidence.update(user_namespaces={name: {k: a[k] for k in ("uid_map", "gid_map", "user_namespace", "uid", "gid")}
                                     for name, a in seen.items()})
    for name, answer in seen.items():
        for kind in ("uid_map", "gid_map"):
            assert answer[kind] != IDENTITY_MAP, (
                f"{name}'s /proc/self/{kind} is the host's identity map {IDENTITY_MAP}: the pod is not in a user "
                f"namespace of its own, though it asks for hostUsers: false")
        assert _host_id(answer["uid_map"], 0) != 0, f"{name}'s uid 0 is the host's uid 0 ({answer['uid_map']})"
        assert _host_id(answer["uid_map"], answer["uid"]) != answer["uid"], (
            f"{name}'s uid {answer['uid']} is the same uid on the host ({answer['uid_map']}): no user namespace")


@pytest.mark.user_namespaced
def test_one_user_namespace_per_pod(alpha, beta, stranger, evidence):
    """alpha and beta are in one user namespace (the same uid and gid maps, the same
    /proc/self/ns/user); the stranger pod on the same node has another, whose ids
    do not overlap the pod's on the host."""
    seen = _maps(alpha, beta, stranger)
    evidence.update(user_namespaces={name: {k: a[k] for k in ("uid_map", "gid_map", "user_namespace")}
                                     for name, a in seen.items()})
    a, b, s = seen["alpha"], seen["beta"], seen["stranger"]
    assert (a["uid_map"], a["gid_map"]) == (b["uid_map"], b["gid_map"]), (
        f"alpha and beta have different id maps (alpha uid {a['uid_map']} gid {a['gid_map']}, beta uid "
        f"{b['uid_map']} gid {b['gid_map']}): they are not in one user namespace")
    assert a["user_namespace"] == b["user_namespace"], (
        f"alpha and beta are in different user namespaces ({a['user_namespace']} and {b['user_namespace']})")
    assert s["user_namespace"] != a["user_namespace"], "the stranger pod is in the probe pod's user namespace"
    overlap = [(m, n) for m in a["uid_map"] for n in s["uid_map"] if m[1] < n[1] + n[2] and n[1] < m[1] + m[2]]
    assert not overlap, (
        f"the stranger pod's uid map {s['uid_map']} overlaps the probe pod's {a['uid_map']} on the host: "
        "their users are not kept apart")


@pytest.mark.parametrize("shared", ["/data/disk", "/data/memory"], ids=["disk", "memory"])
def test_a_file_in_the_volume_belongs_to_its_writer_in_every_container(probe_set, alpha, beta, shared, ipc_name,
                                                                       user_namespaces, evidence):
    """A file alpha writes in an emptyDir (disk and memory) is owned, in alpha and
    in beta alike, by the uid and gid alpha runs as; in a user namespace the
    volume is mapped into it (idmapped mounts), so the owner is alpha's own uid
    inside, whatever id the node's file system holds (the evidence has both)."""
    path = f"{shared}/{ipc_name}.owned"
    who = alpha.run("user-namespace")
    assert who["ok"], f"alpha could not say who it is: {describe(who)}"
    written = alpha.run("write", path=path, size=4096, seed=ipc_name)
    directory = {c.name: c.run("owner", path=shared) for c in (alpha, beta)}
    mount = alpha.run("filesystem", path=shared)  # its options say whether the kubelet idmapped it
    owners = {c.name: c.run("owner", path=path) for c in (alpha, beta)}
    # the pod's uid and the volume's name find the file on the node (the kubelet's pods/<uid>/volumes)
    evidence.update(pod=probe_set.name, pod_uid=probe_set.uid, path=path, alpha_uid=who["uid"], alpha_gid=who["gid"],
                    uid_map=who["uid_map"], gid_map=who["gid_map"],
                    user_namespaces=user_namespaces, write=written, volume_mount=mount, volume_owner=directory,
                    file_owner=owners,
                    host_uid_of_alpha=_host_id(who["uid_map"], who["uid"]))
    assert written["ok"], f"alpha cannot write in its own shared {shared}: {describe(written)}"
    for name, owner in owners.items():
        assert owner["ok"], f"{name} cannot see alpha's file: {describe(owner)}"
        assert (owner["uid"], owner["gid"]) == (who["uid"], who["gid"]), (
            f"in {name}, alpha's file {path} belongs to {owner['uid']}:{owner['gid']}, not to alpha's "
            f"{who['uid']}:{who['gid']}")
