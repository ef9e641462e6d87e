"""The bundled local cluster: a real Kubernetes of one to three nodes on this
machine, for CI and development (cluster/README.md). A package, run from the
project root: `python -m cluster.localcluster up`; its shell scripts beside it."""
