"""The runner image as a conformance image (podshare/conformance_image.py): the
E2E_* variables Hydrophone and Sonobuoy set, mapped onto podshare's selection
and options, and the files they take from the results directory. The dry runs
are real collections of the suites (no cluster needed); the run against a
cluster through Hydrophone itself is tests/test_hydrophone.py."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from podshare.conformance_image import Request
from podshare.conformance_select import selected, spec_text
from podshare.nightly import render_plugin

from .conftest import PROJECT

# What Hydrophone looks for in the log (pkg/conformance/client/logs.go): the spec
# count its progress starts from, and, in the last 30 lines, that the run ended.
WILL_RUN = re.compile(r"Will run (0|[1-9]\d{0,3}|10000) of (0|[1-9]\d{0,3}|10000) specs")
FINISHED = re.compile(r"Ginkgo ran (00|[1-9]\d{0,2}) suite")
HYDROPHONE_FOCUS = r"\[Conformance\]"  # its default (cmd/root.go)


def test_the_environment_maps_onto_podshare_options():
    default = Request.from_env({})
    assert (default.results_dir, default.dry_run, default.workers, default.args) == (Path("/tmp/results"), False, None, [])
    assert Request.from_env({"RESULTS_DIR": "/r"}).results_dir == Path("/r")
    assert Request.from_env({"RESULTS_DIR": "/r", "SONOBUOY_RESULTS_DIR": "/s"}).results_dir == Path("/s")
    assert [Request.from_env({"E2E_DRYRUN": v}).dry_run for v in ("true", "y", "1", "false", "", "no")] == \
        [True, True, True, False, False, False]
    # Hydrophone's --parallel 3 arrives as a Ginkgo flag; Sonobuoy's as E2E_PARALLEL
    assert Request.from_env({"E2E_EXTRA_GINKGO_ARGS": "-v --procs=3"}).workers == 3
    assert [Request.from_env({"E2E_PARALLEL": v}).workers for v in ("true", "4", "false", "")] == [None, 4, 1, None]
    hydrophone = Request.from_env({"E2E_EXTRA_ARGS": "--all-nodes --runtime-class=gvisor", "KUBE_TEST_REPO": "m.example/p"})
    assert hydrophone.args == ["--registry", "m.example/p", "--all-nodes", "--runtime-class=gvisor"]
    sep = Request.from_env({"E2E_EXTRA_ARGS": "-m ipc|--keep|on-failure", "E2E_EXTRA_ARGS_SEP": "|"})
    assert sep.args == ["-m ipc", "--keep", "on-failure"]
    args = Request.from_env({"RESULTS_DIR": "/r", "E2E_PARALLEL": "2", "E2E_EXTRA_ARGS": "--keep always"}).pytest_args()
    assert args == ["--reports-dir", "/r", "--junitxml=/r/junit_01.xml", "--workers", "2", "--keep", "always"]
    assert "E2E_SKIP" in (Request.from_env({"E2E_SKIP": "(unclosed"}).problem or "")


def test_focus_and_skip_are_searched_in_the_claims_text_as_ginkgo_does():
    hostname = spec_text("suites/test_identity.py::test_hostname_is_the_pod_name", ["identity"],
                         "The hostname is the pod's name in every container.")
    sem = spec_text("suites/test_sysv_ipc.py::test_semaphore[userns]", ["ipc", "userns"], "A semaphore is shared.")
    both = [hostname, sem]
    hit = lambda focus=None, skip=None: [s for s in both if selected(  # noqa: E731
        s, re.compile(focus) if focus else None, re.compile(skip) if skip else None)]
    assert hit() == hit(HYDROPHONE_FOCUS) == both
    assert hit("hostname") == [hostname] and hit(r"\[ipc\]") == [sem] and hit("pod's name") == [hostname]
    assert hit(HYDROPHONE_FOCUS, r"\[userns\]") == [hostname]
    assert hit("hostname|semaphore", "hostname") == [sem]


def dry_run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    """The entrypoint as the image runs it, in a scrubbed environment (no cluster,
    no PODSHARE_* of the caller's shell), its results directory under tmp_path."""
    results = tmp_path / "results"
    tmp_path.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PODSHARE_", "E2E_", "KUBECONFIG"))}
    done = subprocess.run([sys.executable, "-m", "podshare", "conformance-image"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**clean, "PYTHONPATH": str(PROJECT), "RESULTS_DIR": str(results),
                                                       "E2E_DRYRUN": "true", **env})
    return done, results


def cases(results: Path) -> list[ElementTree.Element]:
    return list(ElementTree.parse(results / "junit_01.xml").getroot().iter("testcase"))


def test_a_dry_run_lays_out_what_hydrophone_and_sonobuoy_take(tmp_path):
    everything, all_results = dry_run(tmp_path / "all", E2E_FOCUS=HYDROPHONE_FOCUS)
    assert everything.returncode == 0, everything.stdout + everything.stderr
    total = int(WILL_RUN.search((all_results / "e2e.log").read_text())[1])
    # "::test_" is in the claim's id only, not in its sentence: what is selected is known here
    done, results = dry_run(tmp_path / "some", E2E_FOCUS="::test_hostname|::test_sem", E2E_SKIP="blocked")
    assert done.returncode == 0, done.stdout + done.stderr
    log = (results / "e2e.log").read_text()
    assert log in done.stdout  # the terminal's output, the same bytes
    counts = WILL_RUN.search(log)
    names = [f"{c.get('classname')}::{c.get('name')}" for c in cases(results)]
    assert int(counts[1]) == len(names) and 0 < len(names) < total == len(cases(all_results))
    assert all(re.search("::test_hostname|::test_sem", n) and "blocked" not in n for n in names)
    assert all(c.find("skipped") is not None for c in cases(results))  # nothing ran
    assert FINISHED.search("\n".join(log.splitlines()[-30:]))
    tarball = Path((results / "done").read_text())
    assert tarball.is_absolute() and tarball == results / "e2e.tar.gz"
    with tarfile.open(tarball) as archive:
        assert {"e2e.log", "junit_01.xml"} <= set(archive.getnames())
        assert archive.extractfile("junit_01.xml").read() == (results / "junit_01.xml").read_bytes()


@pytest.mark.parametrize("focus, said", [("(unclosed", "not a regular expression"), ("no-such-claim", "select none")])
def test_nothing_to_run_still_leaves_every_file(tmp_path, focus, said):
    """Hydrophone fails without e2e.log and junit_01.xml to copy, and Sonobuoy waits
    for `done` until its timeout: a run that cannot start writes them too (exit 4)."""
    done, results = dry_run(tmp_path, E2E_FOCUS=focus)
    assert done.returncode == 4
    log = (results / "e2e.log").read_text()
    assert said in log and WILL_RUN.search(log) and FINISHED.search(log)
    [case] = cases(results)
    assert said in case.find("error").get("message")
    assert Path((results / "done").read_text()).exists()


def test_the_sonobuoy_plugin_runs_the_entrypoint_in_its_results_directory():
    text = render_plugin(images={"runner": "mirror.example/runner@sha256:" + "0" * 64}, pull_policy="Never")
    assert not re.search(r"\b(RUNNER_IMAGE|PROBE_IMAGE|NGINX_IMAGE|PULL_POLICY)\b", text)
    plugin = yaml.safe_load(text)
    config, spec = plugin["sonobuoy-config"], plugin["spec"]
    assert (config["driver"], config["plugin-name"], config["result-format"]) == ("Job", "podshare", "junit")
    assert config["result-files"] == ["junit_01.xml"]  # not results.json's neighbours
    assert (spec["image"], spec["imagePullPolicy"]) == ("mirror.example/runner@sha256:" + "0" * 64, "Never")
    assert spec["command"] + spec["args"] == ["python3", "-m", "podshare", "conformance-image"]
    assert {"name": "results", "mountPath": "/tmp/sonobuoy/results"} in spec["volumeMounts"]
    env = {e["name"] for e in spec["env"]}
    assert {"E2E_FOCUS", "E2E_SKIP"} <= env
