"""Hydrophone itself (cluster/build-hydrophone.sh) runs the runner image as its
conformance image against the local cluster, with a focus on three quick
identity claims, and the junit it copies out of its pod says they passed. Needs
the local cluster, whose nodes hold the runner image (PODSHARE_RUNNER_IMAGE)
and the probe image, which serves as Hydrophone's busybox (sh, sleep and cat,
as uid 65534). About 40 s once Hydrophone is built. docs/hydrophone.md."""
from __future__ import annotations

import os
import re
import subprocess
import uuid
from xml.etree import ElementTree

import pytest

from .conftest import PROJECT
from .test_conformance_image import FINISHED, WILL_RUN

pytestmark = pytest.mark.skipif(not os.environ.get("PODSHARE_LOCAL_CLUSTER"),
                                reason="needs the local cluster and its images")
FOCUS = r"::test_hostname_is|::test_net_ipc_and_uts|::test_mount_and_pid"


def test_hydrophone_runs_the_claims_and_takes_their_junit(tmp_path, kube):
    built = subprocess.run([str(PROJECT / "cluster" / "build-hydrophone.sh")], capture_output=True, text=True,
                           timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    hydrophone = os.path.join(built.stdout.strip(), "hydrophone")
    namespace = f"hydrophone-{uuid.uuid4().hex[:6]}"  # its own: Hydrophone makes it and deletes it
    out = tmp_path / "out"
    try:
        done = subprocess.run(
            [hydrophone, "--conformance-image", os.environ["PODSHARE_RUNNER_IMAGE"],
             "--busybox-image", os.environ["PROBE_IMAGE"], "--namespace", namespace, "--focus", FOCUS,
             # the cluster pulls nothing: a missing image fails at once instead of backing off
             "--extra-args", "--image-pull-policy=Never", "--output-dir", str(out)],
            capture_output=True, text=True, timeout=900)
    finally:  # Hydrophone cleans up only after a run it saw to the end
        subprocess.run([hydrophone, "--cleanup", "--namespace", namespace], capture_output=True, timeout=300)
    said = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, said
    log = (out / "e2e.log").read_text()
    cases = list(ElementTree.parse(out / "junit_01.xml").getroot().iter("testcase"))
    names = [c.get("name") for c in cases]
    assert len(names) == 3 == int(WILL_RUN.search(log)[1]), names
    assert all(re.search(FOCUS, "::" + n) for n in names)
    assert all(c.find(kind) is None for c in cases for kind in ("failure", "error", "skipped")), said
    assert FINISHED.search(log) and log.count("\u2022") == 3  # Hydrophone's progress: one per claim
    assert namespace not in {ns.metadata.name for ns in kube.core.list_namespace().items}
