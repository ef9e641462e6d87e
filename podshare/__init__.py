"""podshare: does a Kubernetes pod's containers really share what Kubernetes promises?"""

import datetime as _dt
import uuid as _uuid

__version__ = "0.1.0"

MANAGED_BY = {"app.kubernetes.io/managed-by": "podshare"}
RUN_ID_LABEL = "podshare.io/run-id"
POD_LABEL = "podshare.io/pod"  # selects one pod, e.g. for a Service


def new_run_id() -> str:
    """A run's id: its UTC start, sortable, and six random hex digits."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + _uuid.uuid4().hex[:6]
