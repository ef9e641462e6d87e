"""The install path as a new user meets it: a stock Debian machine, a clean
checkout, the project virtualenv from the lock, and the system's Python left
alone."""
from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest

from cluster import lockfile

from .conftest import PROJECT, needs_root

CACHE = Path(os.environ.get("PODSHARE_CACHE", "/var/cache/podshare")) / "fresh-machine"
# What the README asks a stock machine to have before the two commands.
PREREQUISITES = ("make", "git", "ca-certificates")
SUITES = ("bookworm", "trixie")  # Debian 12 and 13
LOCK = PROJECT / "requirements.lock"

# Runs inside the stock root file system, as root, from the checkout.
INSTALL = r"""
set -eu
cd /root/podshare
cluster/bootstrap.sh
echo "@@collected $(.venv/bin/python -m pytest --collect-only -q -p no:cacheprovider suites | grep -c '::')"
.venv/bin/podshare --help >/dev/null && echo "@@podshare-help ok"
echo "@@probe-wheels $(ls podshare/probe_wheels | grep -c '\.whl$')"
echo "@@go $("$(cluster/go-toolchain.sh)" env GOVERSION)"
/usr/bin/python3 -c 'import kubernetes' 2>/dev/null && echo "@@system-python has kubernetes" || true
/usr/bin/python3 -m pip --version >/dev/null 2>&1 && echo "@@system-python has pip" || true
"""


def _third_party_imports() -> set[str]:
    """Top-level modules imported by podshare, probes, the cluster tools and the tests
    that are neither the standard library nor the project's own packages."""
    # suite_run: the scripts import it by name; cluster: the local cluster's package
    own = {"podshare", "probes", "suites", "tests", "conftest", "suite_run", "cluster"}
    found = set()
    for path in [*PROJECT.glob("podshare/*.py"), *PROJECT.glob("probes/*.py"), *PROJECT.glob("suites/*.py"),
                 *PROJECT.glob("tests/**/*.py"), *PROJECT.glob("cluster/*.py"), PROJECT / "conftest.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            found |= {n.split(".")[0] for n in names} - own - set(sys.stdlib_module_names) - {"__future__"}
    return found


def test_every_import_is_a_declared_dependency_pinned_in_the_lock():
    declared = {lockfile.canonical(re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0]) for r in requires("podshare") or []}
    locked = lockfile.entries(LOCK.read_text())
    providers = packages_distributions()
    for module in sorted(_third_party_imports()):
        dists = {lockfile.canonical(d) for d in providers.get(module, [])}
        assert dists, f"{module} is imported but no installed distribution provides it"
        assert dists & declared, f"{module} (from {dists}) is imported but not in pyproject's dependencies"
        assert dists & set(locked), f"{module} (from {dists}) is not pinned in requirements.lock"
    for name in declared:
        assert name in locked, f"{name} is a dependency but not pinned in requirements.lock"
        assert "--hash=sha256:" in locked[name], f"{name} has no hash in requirements.lock"


def test_the_virtualenv_holds_exactly_the_locked_versions():
    from importlib.metadata import version
    for name, block in lockfile.entries(LOCK.read_text()).items():
        pinned = re.match(r"\S+==(\S+)", block).group(1)
        assert version(name) == pinned, f"{name}: {version(name)} installed, {pinned} locked"


def test_probe_image_libraries_come_from_the_lock():
    picked = lockfile.select(LOCK.read_text(), ["posix_ipc", "sysv_ipc"])
    assert re.findall(r"^(\S+)==", picked, re.M) == ["posix-ipc", "sysv-ipc"]
    assert all(line.strip().startswith("--hash=sha256:") for line in picked.splitlines()
               if not re.match(r"\S+==", line))
    with pytest.raises(SystemExit, match="not in the lock: nosuchlib"):
        lockfile.select(LOCK.read_text(), ["nosuchlib"])


def test_system_python_is_untouched_by_make_test():
    """`make test` (cluster/test.sh) lists the system interpreters' packages before
    it installs anything; by now the bootstrap has run, and nothing may differ."""
    before = os.environ.get("PODSHARE_SYSTEM_PYTHON_BEFORE")
    if not before:
        pytest.skip("runs under `make test`, which notes the system interpreters first")
    now = subprocess.run([PROJECT / "cluster" / "system-python.sh"], capture_output=True, text=True,
                         check=True).stdout
    was = Path(before).read_text()
    assert was, "the listing taken before the install is empty"
    added = sorted(set(now.splitlines()) - set(was.splitlines()))
    removed = sorted(set(was.splitlines()) - set(now.splitlines()))
    assert not added and not removed, f"system Python changed: added {added}, removed {removed}"


def stock_debian(suite: str) -> Path:
    """A stock Debian root file system as a tarball: minbase plus the README's
    prerequisites, made by mmdebstrap and cached by its inputs."""
    key = hashlib.sha256(" ".join((suite, *PREREQUISITES)).encode()).hexdigest()[:12]
    tarball = CACHE / f"{suite}-{key}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(f".{os.getpid()}.tar")
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PREREQUISITES)}",
                        suite, partial], check=True, capture_output=True, timeout=600)
        partial.rename(tarball)
    return tarball


def install_on_stock_debian(suite: str) -> subprocess.CompletedProcess:
    """Extract a stock `suite`, copy in a clean checkout (what git tracks, no .venv),
    and run the install path in a chroot inside a mount namespace of its own (so
    nothing stays mounted), with a clean environment."""
    tarball = stock_debian(suite)
    workdir = Path(tempfile.mkdtemp(prefix=f"podshare-fresh-{suite}-"))
    try:
        root = workdir / "root"
        root.mkdir()
        subprocess.run(["tar", "-xf", tarball, "-C", root], check=True)
        checkout = root / "root" / "podshare"
        checkout.mkdir()
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT,
                               capture_output=True, check=True).stdout
        subprocess.run(["tar", "--null", "-T", "-", "-cf", workdir / "checkout.tar"], cwd=PROJECT,
                       input=files, check=True)
        subprocess.run(["tar", "-xf", workdir / "checkout.tar", "-C", checkout], check=True)
        # This machine's network, not a prerequisite: its resolver, and the local
        # CAs of its TLS-inspecting egress (a stock machine on the internet has neither).
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        local_cas = list(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        for ca in local_cas:
            shutil.copy(ca, root / "usr" / "local" / "share" / "ca-certificates" / ca.name)
        script = ("update-ca-certificates >/dev/null\n" if local_cas else "") + INSTALL
        (root / "tmp" / "install.sh").write_text(script)
        return subprocess.run(
            ["unshare", "--mount", "--fork", "sh", "-c",
             'mount -t proc proc "$0/proc" && exec chroot "$0" /usr/bin/env -i '
             "PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 /bin/bash /tmp/install.sh", root],
            capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def fresh_installs():
    """Both Debian releases at once: each install is mostly waiting on downloads."""
    with ThreadPoolExecutor(len(SUITES)) as pool:
        yield {suite: pool.submit(install_on_stock_debian, suite) for suite in SUITES}


@needs_root
@pytest.mark.slow
@pytest.mark.parametrize("suite", SUITES)
def test_install_path_works_on_a_stock_debian(fresh_installs, suite):
    out = fresh_installs[suite].result()
    told = out.stdout + out.stderr
    assert out.returncode == 0, f"install on stock {suite} failed (exit {out.returncode}):\n{told[-4000:]}"
    assert re.search(r"^@@collected ([1-9]\d*)$", out.stdout, re.M), told[-2000:]
    assert "@@podshare-help ok" in out.stdout
    assert "@@probe-wheels 4" in out.stdout, "a fresh clone did not get the probe wheels from the lock"
    assert re.search(r"^@@go go1\.\d+", out.stdout, re.M), told[-2000:]
    assert "@@system-python has" not in out.stdout, "the install wrote into the system interpreter"


def _venv_with_lock(where: Path) -> Path:
    subprocess.run(["/usr/bin/python3", "-m", "venv", where], check=True)
    subprocess.run([where / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes",
                    "-r", LOCK], check=True)
    return where / "bin"


@pytest.mark.slow
def test_a_built_wheel_runs_the_suites_without_a_checkout(tmp_path):
    """`pip install podshare-*.whl` into one's own virtualenv, then `podshare run`
    from anywhere: the suites and manifests travel inside the wheel."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", tmp_path / "dist", PROJECT], check=True)
    wheel = next((tmp_path / "dist").glob("podshare-*.whl"))
    shipped = {name.rsplit("/", 1)[-1] for name in zipfile.ZipFile(wheel).namelist()
               if name.startswith("podshare/probe_wheels/")}
    assert shipped == {w.name for w in (PROJECT / "podshare" / "probe_wheels").glob("*.whl")} and len(shipped) == 4
    bin_dir = _venv_with_lock(tmp_path / "venv")
    subprocess.run([bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-deps", wheel], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PODSHARE_", "KUBECONFIG"))}
    env["KUBECONFIG"] = "/nonexistent/kubeconfig"
    out = subprocess.run([bin_dir / "podshare", "run", "--collect-only", "-q"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"\b[1-9]\d* tests collected", out.stdout), out.stdout
    assert "warning" not in out.stdout.lower(), out.stdout
    manifest = subprocess.run([bin_dir / "python", "-c", "from podshare.manifests import MANIFESTS, load_manifest;"
                               "print(MANIFESTS); print(load_manifest('probe-pod.yaml')['kind'])"],
                              cwd=elsewhere, capture_output=True, text=True, check=True).stdout.split()
    assert manifest[0].startswith(str(tmp_path / "venv")) and manifest[1] == "Pod", manifest
    # Without the cluster: the same one-line refusal as from a checkout.
    out = subprocess.run([bin_dir / "podshare", "run", "-q", "-k", "hostname"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no kubeconfig at /nonexistent/kubeconfig" in out.stdout, out.stdout[-2000:]


@pytest.mark.slow
def test_pipx_runs_podshare_in_one_shot(tmp_path):
    """`pipx run --spec podshare-*.whl podshare run ...`: no virtualenv of one's own."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", tmp_path / "dist", PROJECT], check=True)
    wheel = next((tmp_path / "dist").glob("podshare-*.whl"))
    subprocess.run(["/usr/bin/python3", "-m", "venv", tmp_path / "pipx"], check=True)
    subprocess.run([tmp_path / "pipx" / "bin" / "python", "-m", "pip", "install", "--quiet", "pipx"], check=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PODSHARE_")},
           "PIPX_HOME": str(tmp_path / "pipx-home"), "PIPX_BIN_DIR": str(tmp_path / "pipx-bin"),
           "KUBECONFIG": "/nonexistent/kubeconfig"}
    out = subprocess.run([tmp_path / "pipx" / "bin" / "pipx", "run", "--spec", wheel, "podshare", "run",
                          "--collect-only", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and re.search(r"\b\d+ tests collected", out.stdout), out.stdout + out.stderr
