"""Each runtime handler of a node in its own words: the binary's `--version`,
the containerd shim it runs under, and for gVisor its platform and whether its
pods get GKE Sandbox's emptyDir hints. `up` writes it to every node as the
annotation podshare.io/runtimes (JSON); podshare reads it into the node facts
and names it in the reports' headers. A real cluster has no such annotation:
there the reports say nothing of it rather than guess.

    python -m cluster.runtime_versions [--bindir DIR] [--gvisor DIR]
                        print what a node on the current stack would carry
                        (without them, the first node's: Debian's runc and crun)
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from . import workers
from .configs import GVISOR_PLATFORM, containerd2_runtimes, youki_binary

ANNOTATION = "podshare.io/runtimes"
RUNC_SHIM = "io.containerd.runc.v2"


def said(*argv) -> str:
    """The first line a binary prints for its version, or why there is none."""
    try:
        out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"unknown ({exc.strerror})"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else f"unknown (exit {out.returncode})"


def of_handlers(runtimes: dict[str, dict], default: str) -> dict:
    """The record of a node whose containerd has these handlers (configs.py's
    containerd2_runtimes, or the first node's)."""
    handlers = {}
    for name, r in runtimes.items():
        entry = {"shim": r.get("shim", RUNC_SHIM), "version": said(r.get("real_binary", r["binary"]), "--version")}
        if r.get("real_binary"):
            entry["via"] = r["binary"]  # a wrapper of ours stands between the shim and the runtime
        if "shim_path" in r:  # gVisor: its shim's own version (which says it is patched here)
            entry["shim_version"] = _shim_version(r["shim_path"])
            entry["platform"] = GVISOR_PLATFORM
            entry["hints"] = "GKE Sandbox emptyDir mount annotations" if name.endswith("-hinted") else "none"
        handlers[name] = entry
    return {"default": default, "handlers": handlers}


def _shim_version(shim: str) -> str:
    """`containerd-shim-runsc-v1 -v` prints its name, then "Version: ..."."""
    try:
        out = subprocess.run([shim, "-v"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"unknown ({exc.strerror})"
    found = [line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if line.strip().startswith("Version:")]
    return found[0] if out.returncode == 0 and found else f"unknown (exit {out.returncode})"


def debian_runtimes() -> dict[str, dict]:
    """The first node's (containerd 1.6): Debian's runc from PATH, its crun, build-youki.sh's youki."""
    return {"runc": {"binary": shutil.which("runc") or "runc"}, "crun": {"binary": "/usr/bin/crun"},
            "youki": {"binary": str(youki_binary())}}


def current_runtimes(bindir: Path, roots: Path, gvisor: Path | None) -> dict[str, dict]:
    """A current-stack node's handlers; crun's wrapper asked for the crun it runs."""
    runtimes = containerd2_runtimes(bindir, roots, gvisor)
    runtimes["crun"] = {**runtimes["crun"], "real_binary": "/usr/bin/crun"}
    return runtimes


def of_worker(w: workers.Worker) -> dict:
    if w.pool.stack == "current":
        return of_handlers(current_runtimes(workers.runtime_bindir(), w.dir / "runtimes", workers.gvisor_bindir()),
                           w.pool.default_runtime)
    return of_handlers(debian_runtimes(), w.pool.default_runtime)


def of_first_node() -> dict:
    return of_handlers(debian_runtimes(), "runc")


def annotation(record: dict) -> dict[str, str]:
    return {ANNOTATION: json.dumps(record, sort_keys=True, separators=(",", ":"))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bindir", type=Path, help="build-runtime.sh's directory")
    p.add_argument("--gvisor", type=Path, help="build-gvisor.sh's directory")
    args = p.parse_args()
    record = (of_handlers(current_runtimes(args.bindir, Path("/nonexistent"), args.gvisor), "runc")
              if args.bindir else of_first_node())
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
