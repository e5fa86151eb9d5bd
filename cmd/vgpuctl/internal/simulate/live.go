package simulate

import (
	"context"
	"errors"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/kubescore"
	"github.com/vgpu-io/vgpu/lib/request"
)

// Running is a pod already on a live node with a vGPU inventory: what it
// holds of the node's GPUs, if vgpu placed it.
type Running struct {
	Key        string
	Node       string
	Assignment *assign.Pod
	// Shape is the pod as the fragmentation policy's mix counts it.
	Shape *request.Pod
}

// Live is a cluster as it stands, as kube-scheduler's cache and vgpu's
// extender see it.
type Live struct {
	// Cluster is the nodes that publish a vGPU inventory
	// (vgpu.io/devices), with their own split count and memory scaling.
	Cluster *Cluster
	// Nodes is every node, sorted by name; Pods every unfinished pod bound
	// to one of them.
	Nodes []*corev1.Node
	Pods  []*corev1.Pod
	// Running is the pods of Pods on nodes with a vGPU inventory.
	Running []Running
	// Waiting counts the pods not yet bound to a node, which the what-if
	// does not place.
	Waiting int
}

// LiveCluster reads the cluster's nodes and pods.
func LiveCluster(ctx context.Context, cs kubernetes.Interface) (*Live, error) {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	live := &Live{Cluster: &Cluster{Source: "live cluster"}}
	known := map[string]bool{}
	gpus := map[string]bool{}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		live.Nodes = append(live.Nodes, n)
		known[n.Name] = true
		raw, ok := n.Annotations[contract.AnnotationDevices]
		if !ok {
			continue
		}
		inv, err := annotation.DecodeDevices(raw)
		if err != nil {
			return nil, fmt.Errorf("node %s: annotation %s: %v", n.Name, contract.AnnotationDevices, err)
		}
		live.Cluster.Nodes = append(live.Cluster.Nodes, Node{Name: n.Name, CPUMilli: n.Status.Allocatable.Cpu().MilliValue(),
			MemoryMiB: n.Status.Allocatable.Memory().Value() >> 20, GPUs: inv.GPUs, SplitCount: inv.SplitCount, MemoryScaling: inv.MemoryScaling})
		gpus[n.Name] = true
	}
	if len(live.Cluster.Nodes) == 0 {
		return nil, errors.New("no node of the cluster publishes a vGPU inventory (" + contract.AnnotationDevices + "): is vgpu's device plugin running?")
	}
	sort.Slice(live.Nodes, func(i, j int) bool { return live.Nodes[i].Name < live.Nodes[j].Name })
	sort.Slice(live.Cluster.Nodes, func(i, j int) bool { return live.Cluster.Nodes[i].Name < live.Cluster.Nodes[j].Name })
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if p.Spec.NodeName == "" {
			live.Waiting++
			continue
		}
		if !known[p.Spec.NodeName] {
			continue
		}
		live.Pods = append(live.Pods, p)
		if !gpus[p.Spec.NodeName] {
			continue
		}
		r := Running{Key: p.Namespace + "/" + p.Name, Node: p.Spec.NodeName}
		if _, ok := p.Annotations[contract.AnnotationAssignment]; ok {
			a, err := annotation.DecodePodAssignment(p)
			if err != nil {
				return nil, fmt.Errorf("pod %s: annotation %s: %v", r.Key, contract.AnnotationAssignment, err)
			}
			r.Assignment = &a
		}
		if req, err := request.FromPod(p); err == nil {
			r.Shape = req
		} else {
			cpu, mem := kubescore.HostRequests(p)
			r.Shape = &request.Pod{HostCPUMilli: cpu, HostMemoryMiB: mem}
		}
		live.Running = append(live.Running, r)
	}
	return live, nil
}
