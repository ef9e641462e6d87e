// Command podshare-sshfs-csi is the bundled cluster's CSI driver for its shared
// file system (cluster/shared_fs.py): one SFTP export, one sshfs client per node.
//
// A hostPath PersistentVolume names one path, and every kubelet here shares the
// host's mount namespace, so one PV cannot resolve to a different client per
// node. A CSI node plugin runs once per kubelet, so it can: each node's plugin
// bind-mounts the volume's directory under ITS node's client. That is what makes
// a ReadWriteMany volume whose pods on two nodes read and write through two
// separate clients.
//
//	podshare-sshfs-csi node --node-name N --endpoint unix://ROOT/plugins/podshare.io~sshfs/csi.sock \
//	    --registration-dir ROOT/plugins_registry --client-dir STATE/nodes/N/shared
//	podshare-sshfs-csi provisioner --kubeconfig K --export STATE/shared-export
package main

import (
	"fmt"
	"os"
)

// DriverName is the CSI driver's and the provisioner's name.
const DriverName = "sshfs.podshare.io"

// Version is the driver's vendor version (GetPluginInfo).
const Version = "0.1.0"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: podshare-sshfs-csi node|provisioner [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "node":
		err = runNode(os.Args[2:])
	case "provisioner":
		err = runProvisioner(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q (node or provisioner)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "podshare-sshfs-csi:", err)
		os.Exit(1)
	}
}
