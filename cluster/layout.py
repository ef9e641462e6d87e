"""The local cluster's fixed names, ports and address ranges, and what it runs:
one place that the PKI, the configurations, `up`, a restart and teardown read."""
from __future__ import annotations

import os
import socket
from pathlib import Path

HERE = Path(__file__).resolve().parent  # cluster/: its build scripts and runtime wrappers
PROJECT = HERE.parent  # where `python -m cluster.<module>` runs
NODE = socket.gethostname().lower()

ETCD_PORT, ETCD_PEER_PORT, API_PORT = 23790, 23800, 6443
# the shared file system's SFTP listener, on 127.0.0.1 only (shared_fs.py; another for a second instance)
SHARED_FS_PORT = int(os.environ.get("PODSHARE_SHARED_FS_PORT", "22022"))
# Pod CIDRs: a /24 per node, allocated by the controller-manager from this.
CLUSTER_CIDR, SERVICE_CIDR, SERVICE_API_IP = "10.244.0.0/16", "10.96.0.0/24", "10.96.0.1"
BRIDGE = "podshare0"
CNI_BIN = "/usr/lib/cni"
# The kubelet's device-plugin registry listens here whatever its --root-dir (a
# constant of k8s.io/kubelet's deviceplugin API): every node's kubelet shares it.
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
# The control plane runs the newest Kubernetes; the first node keeps 1.35, the last
# release whose kubelet supports its containerd 1.6 (the `current` pool runs 1.37).
CONTROL_PLANE = "k8s-1.37"
FIRST_NODE_KUBERNETES = "k8s"
# Started in this order, stopped in the reverse one.
COMPONENTS = ("containerd", "etcd", "kube-apiserver", "kube-controller-manager",
              "kube-scheduler", "kubelet", "kube-proxy")

# The kubelets' flags beyond their configuration files. cAdvisor's housekeeping (every 10 s by
# default) counts each open file of each process in each cgroup, a readlink per /proc/PID/fd entry;
# a gVisor sandbox holds thousands, and in CI the sandboxed node's kubelet spent a fifth of a core on
# it alone (2026-12-04, pprof). Its figures (containers' CPU and memory) feed no claim, and an eviction
# reads fresh stats of its own (volumes: volumeStatsAggPeriod in configs.py).
KUBELET_FLAGS = ("--housekeeping-interval", "30s")
