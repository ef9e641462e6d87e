"""The in-cluster nightly run's manifests (manifests/nightly/nightly.yaml),
filled with this podshare's images: one template for the CronJob and for any
one-off Job made from it."""
from __future__ import annotations

import re

from .images import DEFAULTS, mirrored
from .manifests import MANIFESTS

TEMPLATE = MANIFESTS / "nightly" / "nightly.yaml"
SCHEDULE = "17 3 * * *"


def render(*, images: dict[str, str] | None = None, registry: str | None = None, schedule: str = SCHEDULE,
           pull_policy: str = "IfNotPresent", all_nodes: bool = True, one_per_pool: bool = False) -> str:
    """The manifest text with its placeholders filled (comments kept for the reader)."""
    chosen = {name: mirrored((images or {}).get(name) or DEFAULTS[name], registry) for name in DEFAULTS}
    values = {"RUNNER_IMAGE": chosen["runner"], "PROBE_IMAGE": chosen["probe"], "NGINX_IMAGE": chosen["nginx"],
              "PULL_POLICY": pull_policy, "SCHEDULE": f'"{schedule}"', "ALL_NODES": "1" if all_nodes else "0",
              "ONE_PER_POOL": "1" if one_per_pool and all_nodes else "0"}
    return re.sub(r"\b(" + "|".join(values) + r")\b(?!:)", lambda m: values[m[1]], TEMPLATE.read_text())
