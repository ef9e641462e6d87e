// etcd for the 1.37 control plane, from this module's graph (etcd 3.7.0, the
// version k8s.io/kubernetes v1.37.2 requires); why not Debian's: ../../k8s/cmd/etcd.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
