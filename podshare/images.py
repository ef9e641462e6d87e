"""Every image a run needs, named in one place, and their names on a mirror.

For an air-gapped cluster: `podshare images --registry HOST/PATH` lists them
for mirroring, and the same --registry on a run makes its pods use the mirror."""
from __future__ import annotations

from . import __version__

# image -> (option, environment variable, default)
IMAGES = {
    "probe": ("--probe-image", "PODSHARE_PROBE_IMAGE", f"podshare/probe:{__version__}"),
    "nginx": ("--nginx-image", "PODSHARE_NGINX_IMAGE", "docker.io/library/nginx:1.27"),
    "runner": ("--runner-image", "PODSHARE_RUNNER_IMAGE", f"podshare/runner:{__version__}"),
}
DEFAULTS = {name: default for name, (_flag, _env, default) in IMAGES.items()}


def mirrored(image: str, registry: str | None) -> str:
    """The image under another registry and path, keeping its last name, tag and
    digest: podshare/probe:0.1.0 -> HOST/PATH/probe:0.1.0."""
    if not registry:
        return image
    return f"{registry.rstrip('/')}/{image.rsplit('/', 1)[-1]}"
