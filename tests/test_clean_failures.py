"""Clean failure: bad input and broken clusters end the run within seconds,
non-zero, with one line naming the cause (no traceback, no waiting out
--pod-timeout). Each case against the real cluster."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest

from podshare.manifests import load_manifest

from .conftest import PROJECT, kubeconfig_for, run_suites_as, well_before

# The wait a fail-fast path avoids: the run must end on the first terminal event
# (a pull error, a refusal, a missing object), not by waiting this out. Its time
# is a figure of tests/benchmark.py (clean_failure_s), not asserted here.
POD_TIMEOUT = 300.0


def expect_clean_failure(args: list[str], cause: str) -> str:
    """Run the identity claims with `args`; return the one line that says why they could not run."""
    # On the bundled cluster, the first node: the bound is podshare's, not a pool's pull path.
    pinned = ["--node", socket.gethostname().lower()] if os.environ.get("PODSHARE_LOCAL_CLUSTER") else []
    start = time.monotonic()
    run = run_suites_as("-m", "identity", "--pod-timeout", f"{POD_TIMEOUT:g}", *pinned, *args,
                        timeout=POD_TIMEOUT + 60)
    elapsed = time.monotonic() - start
    output = run.stdout + run.stderr
    assert run.returncode == 2, output  # documented: 2, podshare could not check the claims
    interrupted = [line for line in output.splitlines() if "Interrupted: podshare:" in line]
    assert len(interrupted) == 1 and cause in interrupted[0], output[-3000:]
    # the mechanism: ended on the event, in its words, not on a timeout
    assert "timed out" not in interrupted[0] and "did not answer within" not in interrupted[0], interrupted[0]
    assert elapsed < well_before(POD_TIMEOUT), f"took {elapsed:.0f}s (a timeout waited out?): {output[-2000:]}"
    assert "Traceback" not in output and "During handling" not in output, output[-3000:]
    assert "podshare diagnostics" not in output, "the pods' dumps belong in the reports, not the terminal"
    print(f"{elapsed:.1f}s ({len(output.splitlines())} lines): {interrupted[0]}")
    return interrupted[0]


@pytest.fixture
def admin_kubeconfig(kube, tmp_path) -> str:
    """The test's own credentials, written out for the inner pytest."""
    return str(kubeconfig_for(tmp_path / "admin.kubeconfig", kube))


def test_unreachable_api_server(kube, tmp_path):
    config = kubeconfig_for(tmp_path / "k", kube, token="x", server="https://127.0.0.1:1")
    expect_clean_failure(["--kubeconfig", str(config)], "cannot reach the API server")


def test_context_that_does_not_exist(admin_kubeconfig):
    expect_clean_failure(["--kubeconfig", admin_kubeconfig, "--kube-context", "no-such-context"],
                         "cannot load the cluster config")


def test_wrong_token(kube, tmp_path):
    config = kubeconfig_for(tmp_path / "k", kube, token="not-a-valid-token")
    expect_clean_failure(["--kubeconfig", str(config)], "unauthorized (401)")


def test_rbac_forbidden_names_the_verb_and_resource(account):
    line = expect_clean_failure(["--kubeconfig", str(account.kubeconfig())], "forbidden (403)")
    assert 'cannot create resource "namespaces"' in line


def test_probe_image_that_does_not_exist(admin_kubeconfig):
    expect_clean_failure(["--kubeconfig", admin_kubeconfig, "--probe-image", "podshare.local/no-such-image:1",
                          "--image-pull-policy", "IfNotPresent"], "ErrImagePull")


def test_public_python_image_that_cannot_be_pulled(admin_kubeconfig):
    """The default image (probes from the run) from a mirror that has not got it:
    the first container that needs it names the pull error, and what to do."""
    from podshare.images import DEFAULTS
    line = expect_clean_failure(["--kubeconfig", admin_kubeconfig, "--probe-image", DEFAULTS["probe"],
                                 "--registry", "podshare.local/no-such-mirror", "--image-pull-policy", "IfNotPresent"],
                                "ErrImagePull")
    assert "container alpha" in line and "podshare.local/no-such-mirror/python@sha256:" in line
    node = socket.gethostname().lower() if os.environ.get("PODSHARE_LOCAL_CLUSTER") else ""
    assert f"node {node}" in line and "cannot get the image podshare.local/no-such-mirror/python" in line, line
    assert "build and push the probe image (docs/quickstart.md" in line and "--probe-image" in line and "--registry" in line


def test_image_without_the_probe_program(admin_kubeconfig):
    from podshare.images import DEFAULTS
    nginx = os.environ.get("PODSHARE_NGINX_IMAGE", DEFAULTS["nginx"])
    line = expect_clean_failure(["--kubeconfig", admin_kubeconfig, "--probe-image", nginx], "python3")
    assert "a podshare probe image?" in line


def test_a_node_that_does_not_exist_is_named(admin_kubeconfig):
    expect_clean_failure(["--kubeconfig", admin_kubeconfig, "--node", "no-such-node"],
                         "node 'no-such-node' does not exist")


def test_unschedulable_pod_gives_the_scheduler_reason(admin_kubeconfig, tmp_path):
    manifest = load_manifest("probe-pod.yaml")
    manifest["spec"]["nodeSelector"] = {"podshare.io/no-such-label": "x"}
    (tmp_path / "pod.yaml").write_text(json.dumps(manifest))
    line = expect_clean_failure(["--kubeconfig", admin_kubeconfig, "--pod-manifest", str(tmp_path / "pod.yaml")],
                                "unschedulable")
    assert "nodes are available" in line


def test_a_fatal_setup_failure_under_x_still_exits_2(admin_kubeconfig):
    expect_clean_failure(["--kubeconfig", admin_kubeconfig, "-x", "--namespace", "no-such-namespace"],
                         "namespace 'no-such-namespace' does not exist")


def test_pod_security_refusal_is_not_blamed_on_rbac(admin_kubeconfig):
    line = expect_clean_failure(["--kubeconfig", admin_kubeconfig, "--pod-manifest",
                                 str(PROJECT / "tests" / "variants" / "host-ipc.yaml")], "Pod Security admission")
    assert "RBAC" not in line.split("not by RBAC")[0] and "--pod-security privileged" in line


def test_namespace_that_does_not_exist(admin_kubeconfig):
    expect_clean_failure(["--kubeconfig", admin_kubeconfig, "--namespace", "no-such-namespace"],
                         "namespace 'no-such-namespace' does not exist")
