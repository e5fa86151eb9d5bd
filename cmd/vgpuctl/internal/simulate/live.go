package simulate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/request"
)

// Running is a pod already on a live node: what it holds of the node's
// CPU, memory and (if vgpu placed it) GPUs.
type Running struct {
	Key                 string
	Node                string
	CPUMilli, MemoryMiB int64
	Assignment          *assign.Pod
	// Shape is the pod as the fragmentation policy's mix counts it.
	Shape *request.Pod
}

// LiveCluster reads a cluster as it stands: the nodes that publish a vGPU
// inventory (vgpu.io/devices), with their allocatable CPU and memory and
// their own split count and memory scaling, and every unfinished pod bound
// to one of them.
func LiveCluster(ctx context.Context, cs kubernetes.Interface) (*Cluster, []Running, error) {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("listing nodes: %w", err)
	}
	c := &Cluster{Source: "live cluster"}
	known := map[string]bool{}
	for _, n := range nodes.Items {
		raw, ok := n.Annotations[contract.AnnotationDevices]
		if !ok {
			continue
		}
		inv, err := annotation.DecodeDevices(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("node %s: annotation %s: %v", n.Name, contract.AnnotationDevices, err)
		}
		c.Nodes = append(c.Nodes, Node{Name: n.Name, CPUMilli: n.Status.Allocatable.Cpu().MilliValue(),
			MemoryMiB: n.Status.Allocatable.Memory().Value() >> 20, GPUs: inv.GPUs, SplitCount: inv.SplitCount, MemoryScaling: inv.MemoryScaling})
		known[n.Name] = true
	}
	if len(c.Nodes) == 0 {
		return nil, nil, errors.New("no node of the cluster publishes a vGPU inventory (" + contract.AnnotationDevices + "): is vgpu's device plugin running?")
	}
	sort.Slice(c.Nodes, func(i, j int) bool { return c.Nodes[i].Name < c.Nodes[j].Name })
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("listing pods: %w", err)
	}
	var running []Running
	for i := range pods.Items {
		p := &pods.Items[i]
		if !known[p.Spec.NodeName] || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		r := Running{Key: p.Namespace + "/" + p.Name, Node: p.Spec.NodeName}
		r.CPUMilli, r.MemoryMiB = request.HostRequests(p)
		if raw, ok := p.Annotations[contract.AnnotationAssignment]; ok {
			a, err := annotation.DecodeAssignment(raw)
			if err != nil {
				return nil, nil, fmt.Errorf("pod %s: annotation %s: %v", r.Key, contract.AnnotationAssignment, err)
			}
			r.Assignment = &a
		}
		if req, err := request.FromPod(p); err == nil {
			r.Shape = req
		} else {
			r.Shape = &request.Pod{HostCPUMilli: r.CPUMilli, HostMemoryMiB: r.MemoryMiB}
		}
		running = append(running, r)
	}
	return c, running, nil
}

// Outcome is where one new pod would land.
type Outcome struct {
	Pod  string
	Node string // "" if it stays pending
	GPUs []string
}

// WhatIf places the workload's pods, in order, on the cluster as it stands
// with the running pods, under o's policies, and says where each lands.
// The fragmentation policy's mix is first taught the running pods, as the
// extender's is after a restart. Nothing leaves.
func WhatIf(c *Cluster, w *Workload, running []Running, o Options) ([]Outcome, error) {
	s, err := newSim(c, w, o)
	if err != nil {
		return nil, err
	}
	index := map[string]int{}
	for i, n := range s.names {
		index[n] = i
	}
	for _, r := range running {
		i := index[r.Node]
		if r.Assignment != nil {
			// A running pod holds what it holds, even over a limit.
			_ = s.l.Add(r.Key, *r.Assignment)
			for _, ctr := range r.Assignment.Containers {
				if !ctr.Init {
					s.slotsFree[i] -= len(ctr.Devices)
				}
			}
		}
		s.cpuFree[i] -= r.CPUMilli
		s.memFree[i] -= r.MemoryMiB
		s.version[i]++
		if s.pol.Mix != nil && !o.FGD {
			s.pol.Mix.Observe(r.Shape)
		}
	}
	if s.pol.Mix != nil {
		s.pol.Mix.Refresh()
	}
	out := make([]Outcome, len(w.Tasks))
	for k := range w.Tasks {
		t := &w.Tasks[k]
		out[k].Pod = t.Name
		s.observe(t)
		best := s.choose(t)
		if best < 0 {
			continue
		}
		h, err := s.place(t, fmt.Sprint("whatif-", k), best)
		if err != nil {
			return nil, err
		}
		out[k].Node, out[k].GPUs = s.names[best], h.devices
	}
	return out, nil
}

// writeWhatIf prints one row per new pod, one column per policy.
func writeWhatIf(out io.Writer, c *Cluster, running int, w *Workload, names []string, results [][]Outcome) error {
	fmt.Fprintf(out, "%s: %d nodes with vGPUs, %d GPUs, %d running pods · %d new pods from %s, placed in order\n\n",
		c.Source, len(c.Nodes), c.GPUCount(), running, len(w.Tasks), w.Source)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "pod\t"+strings.Join(names, "\t")+"\t")
	pending := make([]int, len(results))
	for k := range w.Tasks {
		cells := []string{w.Tasks[k].Name}
		for p, r := range results {
			o := r[k]
			if o.Node == "" {
				cells = append(cells, "pending")
				pending[p]++
				continue
			}
			cell := o.Node
			if len(o.GPUs) > 0 {
				cell += " [" + strings.Join(o.GPUs, ",") + "]"
			}
			cells = append(cells, cell)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	cells := []string{"pending"}
	for _, n := range pending {
		cells = append(cells, fmt.Sprint(n))
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	return tw.Flush()
}
