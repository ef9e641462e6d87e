"""Data loader: an init container fills an emptyDir that the main containers
read when they start."""
import pytest

from podshare.evidence import describe

pytestmark = [pytest.mark.pattern, pytest.mark.manifest("patterns/data-loader.yaml")]


@pytest.fixture(scope="module")
def loader_pod(pattern_pods):
    return pattern_pods["Pod/podshare-loader"]


def test_init_container_completed_before_the_main_containers_started(loader_pod, evidence):
    """The init container's successful exit is in the pod status, and it finished
    before either main container started. The order comes from the containers'
    own readings of the kernel's boot clock (the API's timestamps have one-second
    resolution; they are evidence too)."""
    status = loader_pod.read().status
    init = next(s for s in status.init_container_statuses if s.name == "loader").state.terminated
    started = {c.name: c.state.running.started_at for c in status.container_statuses}
    loaded = loader_pod.logged_answer("loader")
    alpha, beta = loader_pod.container("alpha"), loader_pod.container("beta")
    agents_started = {"alpha": beta.run("connect", port=alpha.port)["peer"]["started_boottime_ns"],
                      "beta": alpha.run("connect", port=beta.port)["peer"]["started_boottime_ns"]}
    evidence.update(loader_exit_code=init.exit_code, loader_reason=init.reason,
                    loader_finished_at=init.finished_at.isoformat(),
                    main_started_at={k: v.isoformat() for k, v in started.items()},
                    loader_done_boottime_ns=loaded.get("boottime_ns"), main_started_boottime_ns=agents_started)
    assert init.exit_code == 0 and init.reason == "Completed", (
        f"the init container did not complete: exit {init.exit_code}, {init.reason}")
    for name, at in agents_started.items():
        assert at > loaded["boottime_ns"], (
            f"{name} started {(loaded['boottime_ns'] - at) / 1e6:.1f} ms before the init container finished loading")


def test_main_containers_read_the_data_set_byte_exact_at_start(loader_pod, evidence):
    """Each main container checksummed the data set as its first act, and the
    checksum equals what the init container wrote (4 MiB)."""
    loaded = loader_pod.logged_answer("loader")
    alpha, beta = loader_pod.container("alpha"), loader_pod.container("beta")
    # Each agent reports what it read at start; ask it from the other container.
    reads = {"alpha": beta.run("connect", port=alpha.port)["peer"]["startup_read"],
             "beta": alpha.run("connect", port=beta.port)["peer"]["startup_read"]}
    evidence.update(loader=loaded, startup_reads=reads)
    assert loaded["ok"] and loaded["size"] == 4 << 20, (
        f"the init container did not load the 4 MiB data set: {describe(loaded) if not loaded['ok'] else str(loaded['size']) + ' bytes'}")
    for name, read in reads.items():
        assert read["ok"], f"{name} could not read the data set at start: {describe(read)}"
        assert (read["size"], read["sha256"]) == (loaded["size"], loaded["sha256"]), f"{name} read other bytes"
