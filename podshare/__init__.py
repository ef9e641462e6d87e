"""podshare: does a Kubernetes pod's containers really share what Kubernetes promises?"""

__version__ = "0.1.0"

MANAGED_BY = {"app.kubernetes.io/managed-by": "podshare"}
RUN_ID_LABEL = "podshare.io/run-id"
POD_LABEL = "podshare.io/pod"  # selects one pod, e.g. for a Service
