// etcd for the local cluster, built from the same module graph as Kubernetes.
// Debian's etcd-server is 3.4.23; Kubernetes 1.31+ needs the health endpoints
// that etcd backported only in 3.4.29 / 3.5.11, so Debian's is too old.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
