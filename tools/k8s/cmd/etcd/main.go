// The etcd server, built from go.etcd.io/etcd/server/v3 at the version that
// k8s.io/kubernetes itself requires (the upstream binary's main is the same call).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
