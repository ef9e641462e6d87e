"""Builds the local cluster's images as OCI archives, with no registry.

pause: a static C program. probe and runner: built with buildah from their one
definition, images/probe.Containerfile and images/runner.Containerfile, on a
Debian base made here (mmdebstrap: python3 and pip) instead of the public
python image, so CI proves the Containerfiles that users build for their
registries. nginx: a Debian rootfs with nginx-light, standing in for the public
nginx image the reverse-proxy pattern uses. Each archive is keyed by its inputs,
so `build` is a no-op until one changes; `import` loads them into containerd.

The Debian python base is imported too, also under the public Python image's
names (podshare/images.py's default probe image): the cluster cannot pull, so
the default runs (probes delivered by the run) start on that base.

    python -m cluster.images build              print the archive paths
    python -m cluster.images import --address SOCK
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from podshare.images import PUBLIC_PYTHON  # the one place that names it

from .layout import HERE, PROJECT

CACHE = Path(os.environ.get("PODSHARE_CACHE", "/var/cache/podshare")) / "images"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's, which its pip uses
# Left out of every rootfs: documentation and package lists nothing reads at run time.
EXCLUDES = ("usr/share/doc/", "usr/share/man/", "usr/share/locale/", "usr/share/info/",
            "var/lib/apt/lists/", "var/cache/apt/", "var/cache/debconf/", "dev/")


def read_env() -> dict[str, str]:
    """images.env, the one place that names the local cluster's images (`up` and
    containerd2.py read it here too)."""
    env = {}
    for line in (HERE / "images.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def fingerprint(*parts: bytes | str | Path) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
                if part.is_dir() else [part]
            for f in files:
                h.update(str(f.relative_to(PROJECT)).encode() + b"\0" + f.read_bytes())
        else:
            h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def run_out(*cmd: str | Path) -> str:
    """A command's standard output, stripped (its standard error passes through)."""
    return subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()


def run(*cmd: str | Path, **kw) -> None:
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def debian_rootfs(suite: str, packages: list[str]) -> Path:
    """A cached minbase rootfs with `packages`; about 30 s to make the first time."""
    target = CACHE / f"rootfs-{suite}-{fingerprint(suite, *packages)}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    print(f"mmdebstrap {suite} {' '.join(packages)}", file=sys.stderr)
    run("mmdebstrap", "--quiet", "--variant=minbase", *([f"--include={','.join(packages)}"] if packages else []),
        "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*", suite, target)
    (target / ".complete").touch()
    return target


def _add_tree(tar: tarfile.TarFile, source: Path, prefix: str) -> None:
    """Add `source`'s contents under `prefix`, symlinks (e.g. usr-merge's /lib64) as links."""
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(source)
        for name in sorted(dirnames + filenames):
            rel = (Path(prefix) / rel_dir / name).as_posix()
            if name in (".complete", "__pycache__") or rel.startswith(EXCLUDES):
                continue
            tar.add(os.path.join(dirpath, name), arcname=rel, recursive=False)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def oci_archive(ref: str, out: Path, fill_layer, config: dict) -> Path:
    """Write an OCI image layout tar (one uncompressed layer) that `ctr images import` takes."""
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        layer_path = Path(tmp) / "layer.tar"
        with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as layer:
            fill_layer(layer)
        h = hashlib.sha256()
        with open(layer_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        layer_digest = "sha256:" + h.hexdigest()
        image_config = {
            "architecture": "amd64", "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
        config_bytes = json.dumps(image_config, sort_keys=True).encode()
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_path.stat().st_size}],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest_bytes),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]},
        }]}
        partial = Path(tmp) / "image.tar"
        with tarfile.open(partial, "w") as archive:
            _add_bytes(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
            _add_bytes(archive, "index.json", json.dumps(index).encode())
            _add_bytes(archive, f"blobs/sha256/{config_digest[7:]}", config_bytes)
            _add_bytes(archive, f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes)
            archive.add(layer_path, arcname=f"blobs/sha256/{layer_digest[7:]}")
        partial.rename(out)
    return out


def pause_image(ref: str) -> Path:
    source = HERE / "images" / "pause.c"
    out = CACHE / f"pause-{fingerprint(source, Path(__file__), ref)}.tar"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        run("gcc", "-static", "-Os", "-s", "-o", binary, source)

        def fill(layer):
            layer.add(binary, arcname="pause")
        # PATH as registry.k8s.io/pause has it (BuildKit gives a FROM scratch image
        # its default PATH): youki refuses a process with no PATH in its environment.
        return oci_archive(ref, out, fill, {"Entrypoint": ["/pause"], "User": "65535:65535",
                                            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]})


def python_base(suite: str) -> Path:
    """The local stand-in for the public python image: Debian's python3 and pip."""
    packages = ["python3", "python3-pip"]
    out = CACHE / f"base-python-{fingerprint(suite, *packages, Path(__file__))}.tar"
    if out.exists():
        return out
    rootfs = debian_rootfs(suite, packages)
    return oci_archive("podshare.local/base-python:" + suite, out, lambda layer: _add_tree(layer, rootfs, ""), {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["python3"]})


def buildah_image(name: str, ref: str, suite: str, inputs: list[Path], wheel: bool = False) -> Path:
    """images/NAME.Containerfile built by buildah on the local base, as an OCI archive.
    buildah keeps its storage in a temporary directory: nothing stays behind."""
    containerfile = PROJECT / "images" / f"{name}.Containerfile"
    out = CACHE / f"{name}-{fingerprint(suite, containerfile, *inputs, Path(__file__), ref)}.tar"
    if out.exists():
        return out
    base = python_base(suite)
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp) / "context"
        context.mkdir()
        for path in inputs:  # only what the Containerfile copies
            target = context / path.relative_to(PROJECT)
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__")) if path.is_dir()
             else shutil.copy2(path, target))
        if wheel:  # the runner installs podshare's own wheel
            run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                "-w", context / "dist", PROJECT, stdout=subprocess.DEVNULL)
        storage = ["--root", f"{tmp}/storage", "--runroot", f"{tmp}/run", "--storage-driver", "vfs"]
        # The build's downloads trust what this machine trusts (an intercepting proxy's
        # CA, say); mounted for the RUN steps only, never part of the image.
        trust = ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] if Path(HOST_CA_BUNDLE).exists() else []
        print(f"buildah bud {containerfile.relative_to(PROJECT)}", file=sys.stderr)
        run("buildah", *storage, "bud", "--quiet", "--isolation", "chroot", *trust, "--build-arg", f"BASE=oci-archive:{base}",
            "-f", containerfile, "-t", ref, context, stdout=subprocess.DEVNULL)
        partial = out.with_suffix(".partial")
        run("buildah", *storage, "push", "--quiet", ref, f"oci-archive:{partial}:{ref}")
        run("buildah", *storage, "rmi", "--all", "--force", stdout=subprocess.DEVNULL)
        partial.rename(out)
    return out


def probe_image(ref: str, suite: str) -> Path:
    return buildah_image("probe", ref, suite, [PROJECT / "requirements.lock", HERE / "lockfile.py", PROJECT / "probes"])


def runner_image(ref: str, suite: str) -> Path:
    """podshare where it runs in the cluster: the lock's dependencies and podshare's
    wheel (suites, manifests and the probe wheels inside)."""
    # the wheel ships them: present before it is fingerprinted
    run(sys.executable, "-m", "cluster.probe_wheels", cwd=PROJECT)
    return buildah_image("runner", ref, suite, [PROJECT / "requirements.lock"]
                         + [PROJECT / name for name in RUNNER_SOURCES], wheel=True)


def nginx_image(ref: str, suite: str) -> Path:
    packages = ["nginx-light"]
    out = CACHE / f"nginx-{fingerprint(suite, *packages, Path(__file__), ref)}.tar"
    if out.exists():
        return out
    rootfs = debian_rootfs(suite, packages)
    return oci_archive(ref, out, lambda layer: _add_tree(layer, rootfs, ""), {
        "Entrypoint": ["nginx", "-g", "daemon off;"], "User": "65532:65532",
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    })


def local_path_image(ref: str, suite: str) -> Path:
    """rancher's local-path-provisioner on a minimal Debian (its helper pods need sh,
    mkdir and rm: the same image serves them)."""
    binary = Path(run_out(HERE / "build-local-path.sh"))
    out = CACHE / f"local-path-{fingerprint(suite, binary.read_bytes(), Path(__file__), ref)}.tar"
    if out.exists():
        return out
    rootfs = debian_rootfs(suite, [])

    def fill(layer):
        _add_tree(layer, rootfs, "")
        layer.add(binary, arcname="usr/bin/local-path-provisioner")
    return oci_archive(ref, out, fill, {"Entrypoint": ["local-path-provisioner"],
                                        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]})


RUNNER_SOURCES = ("podshare", "suites", "manifests", "probes", "pyproject.toml")  # what podshare's wheel is made of


def build_all() -> list[Path]:
    env = read_env()
    suite = env["DEBIAN_SUITE"]
    return [pause_image(env["PAUSE_IMAGE"]), python_base(suite), probe_image(env["PROBE_IMAGE"], suite),
            nginx_image(env["NGINX_IMAGE"], suite), runner_image(env["RUNNER_IMAGE"], suite),
            local_path_image(env["LOCAL_PATH_IMAGE"], suite)]


def node_names(ref: str) -> list[str]:
    """The names the node looks an image up by: the tag, and for a reference
    pinned by digest (name:tag@sha256:...) the name@digest form, which is how
    containerd's CRI resolves one (it drops the tag)."""
    named, _, digest = ref.partition("@")
    repository = named.rsplit(":", 1)[0] if ":" in named.rsplit("/", 1)[-1] else named
    return [named] + ([f"{repository}@{digest}"] if digest else [])


def import_all(address: str, archives: list[Path]) -> None:
    ctr = ("ctr", "--address", address, "-n", "k8s.io", "images")
    for archive in archives:
        run(*ctr, "import", "--platform", "linux/amd64", archive, stdout=subprocess.DEVNULL)
    base = "podshare.local/base-python:" + read_env()["DEBIAN_SUITE"]
    for name in node_names(PUBLIC_PYTHON):
        run(*ctr, "tag", "--force", base, name, stdout=subprocess.DEVNULL)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    imp = sub.add_parser("import")
    imp.add_argument("--address", required=True, help="containerd socket")
    args = p.parse_args()
    archives = build_all()
    if args.cmd == "import":
        import_all(args.address, archives)
    for archive in archives:
        print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
