"""The in-cluster nightly run's manifests (manifests/nightly/nightly.yaml),
filled with this podshare's images: one template for the CronJob and for any
one-off Job made from it; and the Sonobuoy plugin (manifests/sonobuoy), filled
the same way."""
from __future__ import annotations

import re

import yaml

from .fence import documents as fence_documents
from .images import DEFAULTS, mirrored
from .manifests import MANIFESTS, fill

TEMPLATE = MANIFESTS / "nightly" / "nightly.yaml"
PLUGIN = MANIFESTS / "sonobuoy" / "podshare.yaml"
SCHEDULE = "17 3 * * *"


NAMESPACE = "podshare-nightly"


def by_digest(image: str) -> bool:
    return bool(re.search(r"@sha256:[0-9a-f]{64}$", image))


def render_plugin(*, images: dict[str, str] | None = None, registry: str | None = None,
                  pull_policy: str = "IfNotPresent") -> str:
    """The Sonobuoy plugin definition with the images filled in."""
    chosen = {name: mirrored((images or {}).get(name) or DEFAULTS[name], registry) for name in DEFAULTS}
    return fill(PLUGIN.read_text(), {"RUNNER_IMAGE": chosen["runner"], "PROBE_IMAGE": chosen["probe"],
                                     "NGINX_IMAGE": chosen["nginx"], "PULL_POLICY": pull_policy})


def render(*, images: dict[str, str] | None = None, registry: str | None = None, schedule: str = SCHEDULE,
           pull_policy: str = "IfNotPresent", all_nodes: bool = True, one_per_pool: bool = False,
           runner_by_tag: bool = False) -> str:
    """The manifest text with its placeholders filled (comments kept for the reader)
    and the namespace's fence and quota appended. The runner image must name a
    digest (ValueError), unless `runner_by_tag` (a local cluster's own build)."""
    chosen = {name: mirrored((images or {}).get(name) or DEFAULTS[name], registry) for name in DEFAULTS}
    if not (runner_by_tag or by_digest(chosen["runner"])):
        raise ValueError(f"the runner image {chosen['runner']} is a tag: name it by digest (NAME@sha256:...), "
                         "since whoever can move the tag runs code with the runner's rights (--runner-by-tag for "
                         "an image of your own that no one else can push)")
    values = {"RUNNER_IMAGE": chosen["runner"], "PROBE_IMAGE": chosen["probe"], "NGINX_IMAGE": chosen["nginx"],
              "PULL_POLICY": pull_policy, "SCHEDULE": f'"{schedule}"', "ALL_NODES": "1" if all_nodes else "0",
              "ONE_PER_POOL": "1" if one_per_pool and all_nodes else "0"}
    text = fill(TEMPLATE.read_text(), values)
    fence = [{**doc, "metadata": {**doc["metadata"], "namespace": NAMESPACE}} for doc in fence_documents()]
    return (text.rstrip("\n") + "\n---\n# The namespace's fence and quota (manifests/fence.yaml)\n"
            + yaml.safe_dump_all(fence, sort_keys=False))
