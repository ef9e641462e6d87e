"""The probe program that runs inside the pod's containers.

It knows nothing of Kubernetes: `python -m probes agent` is a container's main
process, every other verb is a one-shot that prints exactly one JSON object.
"""
