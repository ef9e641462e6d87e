"""`python -m probes serve`: many verbs over one long-lived exec stream.

A new exec is a new API stream and a new Python start (~100 ms). This server
is started once per container and answers JSON lines on stdin:

    {"id": 7, "argv": ["sysv-sem-info", "--key", "42"]}

Each verb runs in a forked child (imports already warm, so a fork costs ~1 ms)
with its own stdout and stderr, exactly as `python -m probes VERB` would:
holders keep running while other verbs are served. Frames on stdout:

    {"serving": true, "pid": ...}            once, when the server is up
    {"id": 7, "err": "..."}                  stderr as it comes (ready lines)
    {"id": 7, "out": "...", "err": "...", "exit": 0}        the verb's stdout once it ended,
    {"id": 7, "out": "", "err": "", "signal": "SIGBUS"}     with how it ended

A child's cmdline is the server's, so each names itself by its verb in
/proc/PID/comm, where `release` finds holders. `release` and `stop-agent` run
in the server itself: stop-agent's answer must leave before the container
dies. A new server ends older ones in its container (a channel the harness
reopened), and a server that ends releases its holders.
"""
from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import sys
import traceback

from .agent import signal_for_exit
from .holding import HOLDER_PREFIXES, release, same_container_processes, signal_processes
from .output import ok


SERVER_NAME = "probes-serve"  # its comm; its children take their verb's


class Job:
    def __init__(self, request_id, argv: list[str], pid: int) -> None:
        self.id, self.argv, self.pid = request_id, argv, pid
        self.out = bytearray()
        self.open = 2  # stdout and stderr, until both read EOF

    @property
    def holder(self) -> bool:
        return bool(self.argv) and self.argv[0].encode().startswith(HOLDER_PREFIXES)


def _ending(status: int) -> dict:
    """How a verb's process ended, for its answer frame: its exit code or the signal."""
    if os.WIFSIGNALED(status):
        return {"signal": signal.Signals(os.WTERMSIG(status)).name}
    return {"exit": os.waitstatus_to_exitcode(status)}


def _frame(**fields) -> None:
    os.write(1, (json.dumps(fields, sort_keys=True) + "\n").encode())


def _name_process(name: str) -> None:
    """Set /proc/self/comm (prctl PR_SET_NAME, 15 bytes), so /proc tells the verb."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(15, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _child(main, argv: list[str], out_w: int, err_w: int) -> None:
    """Run one verb as `python -m probes` would, then exit: never returns."""
    code = 1
    try:
        _name_process(argv[0] if argv else "probes")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, 1024)  # the server's stdin buffer, selector and other jobs' pipes
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code or 0)


class Server:
    """`main` runs one verb from its argv; `agents` finds this container's agent."""

    def __init__(self, main, agents) -> None:
        self.main, self.agents = main, agents
        self.sel = selectors.DefaultSelector()
        self.jobs: dict[int, Job] = {}  # by pid
        self.exited: dict[int, int] = {}  # reaped (pid -> wait status), maybe with output still to read
        self.pending = b""

    def start(self, request_id, argv: list[str]) -> None:
        if argv[:1] == ["release"]:
            return self.release(request_id)
        if argv[:1] == ["stop-agent"]:
            return self.stop_agent(request_id, argv[1:])
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _child(self.main, argv, out_w, err_w)
        os.close(out_w)
        os.close(err_w)
        job = self.jobs[pid] = Job(request_id, argv, pid)
        self.sel.register(out_r, selectors.EVENT_READ, (job, "out"))
        self.sel.register(err_r, selectors.EVENT_READ, (job, "err"))

    def release(self, request_id) -> None:
        """Release every holder in this container: this server's, an older one's, a plain exec's."""
        _frame(id=request_id, out=json.dumps(release(None), sort_keys=True) + "\n", err="")

    def release_all(self) -> None:
        """The harness is gone: its holders let go now, not at their deadlines."""
        signal_processes([j.pid for j in self.jobs.values() if j.holder], signal.SIGUSR1)

    def stop_agent(self, request_id, args: list[str]) -> None:
        exit_code = int(args[args.index("--exit-code") + 1]) if "--exit-code" in args else 0
        agents = self.agents()
        _frame(id=request_id, out=json.dumps(ok(stopping=agents, exit_code=exit_code), sort_keys=True) + "\n", err="")
        signal_processes(agents, signal_for_exit(exit_code))  # the answer is out first: this may end us

    def read_job(self, fd: int, job: Job, stream: str) -> None:
        data = os.read(fd, 65536)
        if data and stream == "out":
            job.out += data
        elif data:
            _frame(id=job.id, err=data.decode("utf-8", "replace"))
        else:
            self.sel.unregister(fd)
            os.close(fd)
            job.open -= 1
            if job.open == 0:
                # Both pipes closed: the verb is ending (a verb closes them only by exiting), so
                # waiting for it is immediate; its status tells an answer from a death by signal.
                status = self.exited.pop(job.pid) if job.pid in self.exited else os.waitpid(job.pid, 0)[1]
                del self.jobs[job.pid]
                _frame(id=job.id, out=job.out.decode("utf-8", "replace"), err="", **_ending(status))

    def read_requests(self) -> bool:
        data = os.read(0, 65536)
        if not data:
            return False  # the harness closed the stream
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in filter(None, (raw.strip() for raw in lines)):
            try:
                request = json.loads(line)
                self.start(request["id"], [str(a) for a in request["argv"]])
            except (ValueError, KeyError, TypeError) as exc:
                _frame(id=None, out="", err=f"bad request {line[:200]!r}: {exc}\n")
        return True

    def reap(self) -> None:
        """Collect exited children; a job's answer goes once its pipes closed (read_job)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.jobs:
                self.exited[pid] = status

    def end(self, *_signal) -> None:
        self.release_all()
        os._exit(0)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.end)
        _name_process(SERVER_NAME)
        signal_processes(same_container_processes(lambda argv: argv[-1] == SERVER_NAME.encode()), signal.SIGTERM)
        self.sel.register(0, selectors.EVENT_READ, None)
        _frame(serving=True, pid=os.getpid())
        while True:
            for key, _ in self.sel.select(timeout=1.0):
                if key.data is None:
                    if not self.read_requests():
                        self.release_all()
                        return
                else:
                    self.read_job(key.fd, *key.data)
            self.reap()


def run(main, agents) -> None:
    # A holder outlives a closed channel only until its own deadline.
    Server(main, agents).run()
