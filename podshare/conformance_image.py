"""The runner image as a Kubernetes conformance image: what Hydrophone
(sigs.k8s.io/hydrophone) and Sonobuoy run, and the runner image's default
command (`podshare conformance-image`; the nightly's CronJob names `nightly`).

The contract is the one of the upstream conformance image's runner
(kubernetes test/conformance/image/go-runner: const.go, cmd.go, main.go), which
both tools drive:

- E2E_FOCUS, E2E_SKIP: regexes over each claim's text (conformance_select.py);
- E2E_DRYRUN: any value but "", false, 0, n, no: collect only, nothing runs;
- E2E_PARALLEL (y, Y, true; or a number) and Hydrophone's `--parallel N`
  (`--procs=N` in E2E_EXTRA_GINKGO_ARGS, pkg/conformance/deploy.go): podshare's
  --workers, the nodes and RuntimeClasses checked side by side; false, n: one;
- E2E_EXTRA_ARGS (split on E2E_EXTRA_ARGS_SEP, default a space): podshare and
  pytest options (Hydrophone's --extra-args); KUBE_TEST_REPO: --registry;
- the results directory: SONOBUOY_RESULTS_DIR, else RESULTS_DIR, else
  /tmp/results (Hydrophone's emptyDir, shared with its output container);
- there: e2e.log (the run's terminal output), junit_01.xml (podshare's junit),
  results.json, report.html, summary.md, metrics.prom; e2e.tar.gz of them all,
  and `done` holding that tarball's absolute path (Sonobuoy's worker waits for
  it: pkg/worker/worker.go GatherResults);
- the last lines of the log say `Ginkgo ran 1 suite`: Hydrophone reads the
  log's last 30 lines for that to know the run ended, and follows the log
  again until it appears (pkg/conformance/client/logs.go, testsAreStillRunning).
  It then copies e2e.log and junit_01.xml out with `cat` in its output
  container (client/download.go): both exist whatever happened.

E2E_PROVIDER, E2E_VERBOSITY and E2E_USE_GO_RUNNER mean nothing to podshare.
The identity is the pod's own (in-cluster configuration: no kubeconfig in the image).
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Mapping
from xml.etree import ElementTree

DEFAULT_RESULTS_DIR = "/tmp/results"
LOG, JUNIT, TARBALL, DONE = "e2e.log", "junit_01.xml", "e2e.tar.gz", "done"
REPORTS = ("results.json", "report.html", "summary.md", "metrics.prom")
OFF = ("", "false", "0", "n", "no")
USAGE, CANNOT_CHECK = 4, 2  # podshare's exit statuses (README.md)
PYTEST = [sys.executable, "-m", "pytest", "--pyargs", "podshare.suites", "-p", "no:cacheprovider",
          "-p", "podshare.conformance_select"]


@dataclass(frozen=True)
class Request:
    """What the conformance image's environment asks of podshare."""
    results_dir: Path
    dry_run: bool = False
    workers: int | None = None
    args: list[str] = field(default_factory=list)
    problem: str | None = None  # set: nothing runs, the reports say this

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Request:
        results = Path(env.get("SONOBUOY_RESULTS_DIR") or env.get("RESULTS_DIR") or DEFAULT_RESULTS_DIR)
        problem = None
        for name in ("E2E_FOCUS", "E2E_SKIP"):
            try:
                re.compile(env.get(name, ""))
            except re.error as exc:
                problem = f"{name}={env[name]!r} is not a regular expression: {exc}"
        sep = env.get("E2E_EXTRA_ARGS_SEP") or " "
        args = [a for a in env.get("E2E_EXTRA_ARGS", "").split(sep) if a]
        if env.get("KUBE_TEST_REPO"):
            args = ["--registry", env["KUBE_TEST_REPO"], *args]
        return cls(results, env.get("E2E_DRYRUN", "").strip().lower() not in OFF, workers_of(env), args, problem)

    def pytest_args(self) -> list[str]:
        """The run's options: reports and junit into the results directory (junit
        under the name Hydrophone fetches), then the caller's, which win."""
        workers = ["--workers", str(self.workers)] if self.workers else []
        return ["--reports-dir", str(self.results_dir), f"--junitxml={self.results_dir / JUNIT}", *workers, *self.args]


def workers_of(env: Mapping[str, str]) -> int | None:
    """None leaves podshare's default (side by side where there are several groups)."""
    procs = re.search(r"(?:^|\s)--(?:procs|nodes)[= ](\d+)", env.get("E2E_EXTRA_GINKGO_ARGS", ""))
    if procs:
        return int(procs[1])
    value = env.get("E2E_PARALLEL", "").strip()
    if value.isdigit():
        return int(value)
    return 1 if value.lower() in ("false", "n", "no") else None


class Tee:
    """The run's terminal output, to the container's log and to e2e.log at once."""

    def __init__(self, log: Path) -> None:
        self.file: BinaryIO = log.open("ab")

    def write(self, data: bytes) -> None:
        for out in (sys.stdout.buffer, self.file):
            out.write(data)
            out.flush()

    def line(self, text: str) -> None:
        self.write(f"{text}\n".encode())


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONIOENCODING": "utf-8"}


def collect(request: Request) -> tuple[int, str]:
    """The selection, as pytest collects it with the run's own options (no cluster needed
    for the default dimensions); its output ends with conformance_select's Will-run line."""
    done = subprocess.run([*PYTEST, "--collect-only", "-q", *request.args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=child_env())
    return done.returncode, done.stdout.decode(errors="replace")


def run(request: Request, tee: Tee) -> int:
    """pytest in a child whose output is copied as it comes (unbuffered: the
    progress dots have no newline); SIGTERM reaches it, so podshare tears down."""
    child = subprocess.Popen([*PYTEST, *request.pytest_args()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=child_env())
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
    try:
        for chunk in iter(lambda: child.stdout.read1(65536), b""):
            tee.write(chunk)
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


WILL_RUN = re.compile(r"^Will run (\d+) of (\d+) specs$", re.M)


def selection(request: Request) -> tuple[str, list[str], str | None, int]:
    """The collection's text for the log (its Will-run line always in it: Hydrophone
    stops on an e2e.log without one), the selected ids, why nothing can run and the exit status then."""
    if request.problem:
        return "Will run 0 of 0 specs\n", [], request.problem, USAGE
    status, collected = collect(request)
    counts = WILL_RUN.search(collected)
    if status not in (0, 5) or counts is None:
        return collected + "Will run 0 of 0 specs\n", [], f"collecting the claims failed (pytest exit {status})", CANNOT_CHECK
    ids = [line for line in collected.splitlines() if "::" in line and not line.startswith(" ")]
    if counts[1] == "0":
        return collected, [], f"E2E_FOCUS and E2E_SKIP select none of the {counts[2]} claims", USAGE
    return collected if request.dry_run else counts[0] + "\n", ids, None, 0


def junit_without_a_run(path: Path, ids: list[str], error: str | None) -> None:
    """A dry run's junit (every selected claim skipped, as Ginkgo's dry run reports
    them), or one error where podshare could not start: Hydrophone fails without the file."""
    suite = ElementTree.Element("testsuite", name="podshare", tests=str(1 if error else len(ids)),
                                skipped=str(0 if error else len(ids)), errors=str(1 if error else 0), failures="0")
    if error:
        case = ElementTree.SubElement(suite, "testcase", classname="podshare", name="conformance image")
        ElementTree.SubElement(case, "error", message=error)
    for check in [] if error else ids:
        module, _, name = check.partition("::")
        case = ElementTree.SubElement(suite, "testcase", classname=module, name=name)
        ElementTree.SubElement(case, "skipped", message="dry run (E2E_DRYRUN): not run")
    ElementTree.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def hand_over(results: Path) -> Path:
    """Every result in one tarball and its path in `done`, as the upstream runner does."""
    tarball, partial = results / TARBALL, results / (TARBALL + ".partial")
    with tarfile.open(partial, "w:gz") as archive:
        for name in (LOG, JUNIT, *REPORTS):
            if (results / name).exists():
                archive.add(results / name, arcname=name)
    partial.rename(tarball)
    (results / DONE).write_text(str(tarball.resolve()))
    return tarball


def main() -> int:
    env = os.environ  # the children read E2E_FOCUS and E2E_SKIP from it too (conformance_select)
    request = Request.from_env(env)
    results = request.results_dir
    results.mkdir(parents=True, exist_ok=True)
    for name in (LOG, JUNIT, TARBALL, DONE, *REPORTS):  # an earlier run's files would pass for this one's
        (results / name).unlink(missing_ok=True)
    # Empty until the Will-run line can come with the first bytes: Hydrophone reads an
    # empty log as not started yet, a missing one as the end of the run (logs.go, watchStatus).
    tee, start = Tee(results / LOG), time.monotonic()
    text, ids, error, status = selection(request)
    tee.write((f"podshare conformance image: focus {env.get('E2E_FOCUS', '')!r}, skip {env.get('E2E_SKIP', '')!r}, "
               f"dry run {request.dry_run}, options {shlex.join(request.pytest_args())}\n{text}").encode())
    if error is None and not request.dry_run:
        status = run(request, tee)
        if not (results / JUNIT).exists():
            error = f"the run wrote no junit (exit {status})"
    if error:
        tee.line(f"podshare conformance image: {error}")
    if error or request.dry_run:
        junit_without_a_run(results / JUNIT, ids, error)
    tee.line(f"podshare: exit status {status}; Ginkgo ran 1 suite in {time.monotonic() - start:.1f}s "
             "(the line Hydrophone waits for)")
    tee.file.close()
    print(f"podshare conformance image: results in {hand_over(results)} (its path in {results / DONE})", flush=True)
    return status
