"""subPath and subPathExpr: two containers mounting the same subdirectory of a
shared emptyDir share it, file for file and at once; different subdirectories
are isolated from each other, yet all are in the volume, as a full mount of it
shows. Upstream's subpath.go checks one container at a time; broken in the wild
where a sandboxed runtime gives each subPath mount a copy of its own."""
import pytest

from podshare.evidence import could_not, describe, failed_with, stranger_sees

pytestmark = [pytest.mark.volume, pytest.mark.manifest("patterns/subpaths.yaml"), pytest.mark.volume_kind("emptyDir")]

SAME, OWN, ALL = "/sub/same", "/sub/own", "/sub/all"  # subPath same; subPathExpr $(PODSHARE_CONTAINER); whole


@pytest.fixture(scope="module")
def subpaths_pod(pattern_pods):
    return pattern_pods["Pod/podshare-subpaths"]


def test_same_subpath_is_shared_byte_exact_and_live(subpaths_pod, stranger, ipc_name, evidence):
    """A 1 MiB file alpha writes in the subPath both mount is read byte-exact in
    beta, and what beta then appends alpha reads at once; the stranger pod has
    no such file."""
    alpha, beta = subpaths_pod.container("alpha"), subpaths_pod.container("beta")
    data, log = f"{SAME}/{ipc_name}.bin", f"{SAME}/{ipc_name}.log"
    steps = {
        "alpha_write": alpha.run("write", path=data, size=1 << 20, seed=ipc_name),
        "beta_read": beta.run("read", path=data),
        "alpha_append": alpha.run("append", path=log, text="alpha\n"),
        "beta_append": beta.run("append", path=log, text="beta\n"),
        "alpha_read_log": alpha.run("read", path=log, text=True),
        "stranger": stranger.run("read", path=data),
    }
    evidence.update(steps)
    written, read = steps["alpha_write"], steps["beta_read"]
    assert written["ok"], f"alpha could not write in its subPath mount {SAME}: {describe(written)}"
    assert read["ok"], could_not("beta", f"alpha's file in the subPath both mount ({SAME})", read)
    assert (read["size"], read["sha256"]) == (written["size"], written["sha256"]), (
        f"beta read {read['size']} bytes that differ from the {written['size']} alpha wrote in {SAME}")
    assert steps["beta_append"]["ok"], could_not("beta", f"the file alpha made in {SAME}", steps["beta_append"])
    assert steps["alpha_read_log"].get("text") == "alpha\nbeta\n", (
        f"alpha does not read at once what beta appended in {SAME}: "
        + (f"it reads {steps['alpha_read_log']['text']!r}" if steps["alpha_read_log"].get("ok")
           else describe(steps["alpha_read_log"])))
    assert failed_with(steps["stranger"], "ENOENT"), (
        stranger_sees("the stranger pod reads alpha's subPath file", steps["stranger"]))


def test_different_subpaths_are_isolated_but_both_in_the_full_mount(subpaths_pod, ipc_name, evidence):
    """Each container's subPathExpr mount ($(PODSHARE_CONTAINER)) is a
    subdirectory of its own: neither finds the other's file there (ENOENT), yet
    alpha's full mount of the volume holds both, byte-exact, under alpha/ and
    beta/, beside the subPath both share."""
    alpha, beta = subpaths_pod.container("alpha"), subpaths_pod.container("beta")
    name = f"{ipc_name}.own"
    steps = {
        "alpha_write": alpha.run("write", path=f"{OWN}/{name}", size=65536, seed=f"alpha-{ipc_name}"),
        "beta_write": beta.run("write", path=f"{OWN}/{name}.beta", size=65536, seed=f"beta-{ipc_name}"),
        "beta_reads_alpha": beta.run("read", path=f"{OWN}/{name}"),
        "alpha_reads_beta": alpha.run("read", path=f"{OWN}/{name}.beta"),
        "full_alpha": alpha.run("read", path=f"{ALL}/alpha/{name}"),
        "full_beta": alpha.run("read", path=f"{ALL}/beta/{name}.beta"),
        "full_listing": alpha.run("list", path=ALL),
    }
    evidence.update(steps)
    for who in ("alpha", "beta"):
        assert steps[f"{who}_write"]["ok"], f"{who} could not write in its own subPath {OWN}: " \
                                            f"{describe(steps[who + '_write'])}"
    for reader, writer in (("beta", "alpha"), ("alpha", "beta")):
        crossed = steps[f"{reader}_reads_{writer}"]
        assert failed_with(crossed, "ENOENT"), (
            f"{reader} reads {writer}'s file through its own subPath {OWN}: the two subPaths are one directory"
            if crossed["ok"] else f"{reader}'s read of {writer}'s file name in its own subPath ended with "
                                  f"{describe(crossed)}, not ENOENT")
    for who in ("alpha", "beta"):
        full, written = steps[f"full_{who}"], steps[f"{who}_write"]
        assert full["ok"], could_not("alpha", f"{who}'s file through the full mount {ALL}/{who}", full)
        assert full["sha256"] == written["sha256"], (
            f"the full mount's {ALL}/{who} holds other bytes than {who} wrote in its own subPath")
    listing = steps["full_listing"]
    assert listing["ok"] and {"alpha", "beta", "same"} <= set(listing["entries"]), (
        f"alpha's full mount {ALL} does not show every subPath: "
        + (f"it holds {', '.join(listing['entries']) or 'nothing'}" if listing["ok"] else describe(listing)))
