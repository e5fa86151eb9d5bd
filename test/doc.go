// Package test holds vgpu's end-to-end harness: a local control plane built
// from the real Kubernetes and etcd sources, with simulated GPU nodes.
package test
