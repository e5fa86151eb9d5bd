// Command etcd is the etcd server, built from the pinned etcd module so the
// e2e harness runs a real etcd without downloading release archives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
