"""shareProcessNamespace: true (issue 28 §1): the pod's containers share one
PID namespace, whose PID 1 is the pod's sandbox, not a container's process, as
Kubernetes documents ("Share Process Namespace between Containers in a Pod":
`kill -HUP 1` signals the pod sandbox); each container sees the others'
processes. On deletion the kubelet stops each container: its own process gets
the SIGTERM; which other processes get one (a helper a container started beside
its main process) is recorded as evidence, since no document promises it."""
import pytest

from podshare.evidence import could_not
from podshare.term_log import read_while_terminating

pytestmark = [pytest.mark.lifecycle, pytest.mark.pattern, pytest.mark.manifest("patterns/shared-pid.yaml")]

TERM_LOG = "/data/disk/terminations.jsonl"


@pytest.fixture(scope="module")
def shared_pid_pod(pattern_pods):
    return pattern_pods["Pod/podshare-shared-pid"]


def test_pid_1_is_the_sandbox_and_each_container_sees_the_others_processes(shared_pid_pod, evidence):
    """In alpha and in beta PID 1 is the same process, the pod's sandbox (pause),
    not either container's own; both see the same two main processes (the
    containers' agents), under the same pids."""
    alpha, beta = shared_pid_pod.container("alpha"), shared_pid_pod.container("beta")
    in_alpha = alpha.run("processes")
    in_beta = beta.run("processes")
    evidence.update(alpha={k: in_alpha.get(k) for k in ("ok", "own_pid", "pid1", "errno", "detail")},
                    beta={k: in_beta.get(k) for k in ("ok", "own_pid", "pid1", "errno", "detail")},
                    seen_by_beta=[p for p in in_beta.get("processes", []) if p["pid"] != in_beta.get("own_pid")])
    assert in_alpha["ok"], could_not("alpha", "its processes", in_alpha)
    assert in_beta["ok"], could_not("beta", "its processes", in_beta)
    assert in_alpha["pid1"] == in_beta["pid1"] and "pause" in (in_alpha["pid1"] or ""), (
        f"PID 1 is not the pod's sandbox in both containers: alpha sees {in_alpha['pid1']!r}, "
        f"beta {in_beta['pid1']!r}")
    agents = {who: {p["pid"] for p in seen["processes"] if p["cmdline"].endswith("probes agent")}
              for who, seen in (("alpha", in_alpha), ("beta", in_beta))}
    assert agents["alpha"] == agents["beta"] and len(agents["alpha"]) == 2, (
        f"alpha and beta do not see the same two main processes (alpha sees {sorted(agents['alpha'])}, beta "
        f"{sorted(agents['beta'])}): the containers do not share one PID namespace")


def test_on_deletion_each_containers_own_process_gets_the_sigterm(shared_pid_pod, evidence):
    """When the pod is deleted, alpha's and beta's own processes each get a
    SIGTERM (each notes it in the shared volume; beta, lingering 3 s, is read).
    Evidence, not claimed: whether a helper process alpha started beside its
    main one (in the one PID namespace) gets a SIGTERM too, or only the end."""
    alpha, beta = shared_pid_pod.container("alpha"), shared_pid_pod.container("beta")
    helper = alpha.start("hold-term-note", path=TERM_LOG, seconds=120).wait_ready()
    # Made now, empty (and beta's channel opened: no new exec into a terminating pod): the
    # agents' first notes, at once, each creating it, met EACCES in one on gVisor (CI, 2026-12-04).
    made = beta.run("write", path=TERM_LOG, size=0, seed="term-log")
    assert made["ok"], could_not("beta", f"the pod's term log {TERM_LOG}", made)
    shared_pid_pod.begin_deletion()
    # the pod's 10 s of grace, and more; a helper's note, if one comes, lands with alpha's
    seen = read_while_terminating(beta, TERM_LOG, {("alpha", "sigterm"), ("beta", "sigterm")}, within=40.0, settle=0.5)
    last, events = seen.last, seen.events
    evidence.update(term_log=last, channel_ended=seen.ended, helper=" ".join(helper.argv),
                    helper_got_sigterm=("alpha-helper", "sigterm") in events, events_ms=seen.events_ms())
    assert last is not None and last.get("ok"), could_not("beta", f"the pod's term log {TERM_LOG} while the pod "
                                                                  "terminated", last or {"ok": False, "detail": seen.ended})
    missing = [c for c in ("alpha", "beta") if (c, "sigterm") not in events]
    assert not missing, (f"{' and '.join(missing)}'s own process got no SIGTERM when the pod was deleted (the term "
                         f"log holds {', '.join(f'{c} {e}' for c, e in events) or 'nothing'})")
