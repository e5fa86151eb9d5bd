// Command pause is the pod sandbox of the test node (test/cluster's real
// node): it holds a pod's namespaces until SIGINT or SIGTERM, and reaps
// what is re-parented to it, as registry.k8s.io/pause does; no registry is
// reachable here to pull that one.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	child := make(chan os.Signal, 1)
	signal.Notify(child, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			return
		case <-child:
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
