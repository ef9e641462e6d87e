"""Every image a run needs, named in one place, and their names on a mirror.

For an air-gapped cluster: `podshare images --registry HOST/PATH` lists them
for mirroring, and the same --registry on a run makes its pods use the mirror."""
from __future__ import annotations

from . import __version__

# The public Python image images/probe.Containerfile builds on (its BASE): the
# default probe image, with the probes delivered by the run (podshare/delivery.py).
# Pinned by the digest of the tag's multi-platform index, as public Dockerfiles
# pin it; the tag stays for the reader and for `podshare images`.
PUBLIC_PYTHON = ("docker.io/library/python:3.11.11-slim-bookworm"
                 "@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5")

# image -> its default; each is the option --<image>-image (podshare.settings).
DEFAULTS = {
    "probe": PUBLIC_PYTHON,
    "nginx": "docker.io/library/nginx:1.27",
    "runner": f"podshare/runner:{__version__}",
}
IMAGES = tuple(DEFAULTS)


def mirrored(image: str, registry: str | None) -> str:
    """The image under another registry and path, keeping its last name, tag and
    digest: podshare/probe:0.1.0 -> HOST/PATH/probe:0.1.0."""
    if not registry:
        return image
    return f"{registry.rstrip('/')}/{image.rsplit('/', 1)[-1]}"
