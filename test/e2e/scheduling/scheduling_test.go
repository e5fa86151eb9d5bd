// Package scheduling proves vgpu's extender and webhook against the real
// kube-scheduler and kube-apiserver (issue 4): it runs the scenarios both
// scheduling paths share (test/e2e/scenarios: admission, whole GPUs, gpu: N,
// selectors, percentages, requeue, a burst with an extender crash, a dead
// webhook) on the extender path, and placement by policy at node and GPU
// level, which only this path has. The subtests share one cluster and run
// in order; each cleans up its pods.
package scheduling

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/booking"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/e2e/scenarios"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

const ns = scenarios.Namespace

// extender is the extender path: kube-scheduler with vgpu's extender, the
// webhook routing vgpu pods to it, nodes carrying their inventory.
type extender struct {
	c   *cluster.Cluster
	ext *daemons.Extender
	wh  *daemons.Webhook
}

func TestScheduling(t *testing.T) {
	c := cluster.Run(t, cluster.Options{NoScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	e := &extender{c: c}
	must(t, daemons.SetSettings(ctx, c, settings.Default()))
	var err error
	if e.ext, err = daemons.StartExtender(ctx, c, "--log-level=debug"); err != nil {
		t.Fatal(err)
	}
	cfg, err := daemons.SchedulerConfig(e.ext.URL)
	must(t, err)
	c.SetSchedulerConfig(cfg)
	must(t, c.StartScheduler(ctx))
	if e.wh, err = daemons.StartWebhook(ctx, c); err != nil {
		t.Fatal(err)
	}
	must(t, c.CreateNamespace(ctx, ns))
	var nodes []string
	for _, spec := range scenarios.Fixture {
		nodes = append(nodes, e.AddNodes(t, ctx, spec)...)
	}
	scenarios.Run(t, ctx, e, nodes)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (e *extender) Name() scenarios.PathName  { return scenarios.Extender }
func (e *extender) Cluster() *cluster.Cluster { return e.c }
func (e *extender) Webhook() *daemons.Webhook { return e.wh }

func (e *extender) AddNodes(t *testing.T, ctx context.Context, spec gpunode.Spec) []string {
	t.Helper()
	names, err := gpunode.Create(ctx, e.c.Client, spec)
	must(t, err)
	must(t, e.c.WaitForNodesReady(ctx, names...))
	list, err := e.c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	must(t, err)
	// The extender knows every node before a pod may land on one.
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := e.ext.Metrics(ctx)
		if err == nil && countMetric(m, "vgpu_extender_node_allocated_slots") == len(list.Items) {
			return names
		}
		if time.Now().After(deadline) {
			t.Fatalf("the extender does not know the %d nodes (%v)", len(list.Items), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *extender) Inventories(t *testing.T, ctx context.Context) map[string]device.Inventory {
	t.Helper()
	list, err := e.c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	must(t, err)
	out := map[string]device.Inventory{}
	for _, n := range list.Items {
		if inv, err := annotation.DecodeDevices(n.Annotations[contract.AnnotationDevices]); err == nil {
			out[n.Name] = inv
		}
	}
	return out
}

func (e *extender) Bookings(t *testing.T, ctx context.Context) map[string]assign.Pod {
	t.Helper()
	list, err := e.c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	must(t, err)
	byNode := map[string][]corev1.Pod{}
	for _, p := range list.Items {
		if p.Spec.NodeName != "" {
			byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
		}
	}
	out := map[string]assign.Pod{}
	for node, pods := range byNode {
		bs, warnings := booking.FromPods(node, pods)
		for _, w := range warnings {
			t.Errorf("unreadable assignment: %s", w)
		}
		for _, b := range bs {
			out[b.Pod] = b.Assignment
		}
	}
	return out
}

// Booked is the extender's ledger, from its /metrics.
func (e *extender) Booked(ctx context.Context) (int, error) {
	m, err := e.ext.Metrics(ctx)
	return sumMetric(m, "vgpu_extender_node_allocated_slots"), err
}

// Admitted: a valid pod comes out routed to vgpu's scheduler with
// nvidia.com/gpu: 1.
func (e *extender) Admitted(p *corev1.Pod) error {
	gpu := p.Spec.Containers[0].Resources.Limits[contract.ResourceGPU]
	req := p.Spec.Containers[0].Resources.Requests[contract.ResourceGPU]
	if p.Spec.SchedulerName != contract.DefaultSchedulerName || gpu.Value() != 1 || req.Value() != 1 {
		return fmt.Errorf("schedulerName %q, nvidia.com/gpu limit %s request %s", p.Spec.SchedulerName, gpu.String(), req.String())
	}
	return nil
}

// Crash kills the extender while pods are being filtered and bound: binds
// in flight are cut, pods created meanwhile meet a dead extender; once
// back, it rebuilds its ledger from the API server.
func (e *extender) Crash(t *testing.T, ctx context.Context) (string, func(context.Context) error) {
	e.ext.Kill()
	return "the extender", e.ext.Start
}

func sumMetric(text, name string) int {
	total := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			var v float64
			fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
			total += int(v)
		}
	}
	return total
}

func countMetric(text, name string) int {
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name+"{") {
			n++
		}
	}
	return n
}

func (e *extender) settings(t *testing.T, ctx context.Context, node, gpu settings.Policy) {
	t.Helper()
	s := settings.Default()
	s.NodeSchedulerPolicy, s.GPUSchedulerPolicy = node, gpu
	must(t, daemons.SetSettings(ctx, e.c, s))
	// The extender picks it up from its informer; give the watch a moment.
	time.Sleep(500 * time.Millisecond)
}

// Placement: test 1 of issue 4, binpack and spread at node and GPU level,
// set in the settings or by the pod. The DRA path has no such policies
// (docs/dra.md#policies).
func (e *extender) Placement(t *testing.T, ctx context.Context, env *scenarios.Env) {
	// Back to the defaults for the scenarios that follow.
	defer e.settings(t, ctx, settings.Binpack, settings.Spread)
	nodes := env.Nodes
	t.Run("binpack nodes, binpack GPUs", func(t *testing.T) {
		defer env.Cleanup(t, ctx)
		e.settings(t, ctx, settings.Binpack, settings.Binpack)
		a1 := env.Place(t, ctx, scenarios.Pod("bb-1", nil, contract.ResourceMemory, "20000", contract.ResourceCores, "20"))
		a2 := env.Place(t, ctx, scenarios.Pod("bb-2", nil, contract.ResourceMemoryPercentage, "25", contract.ResourceCores, "30"))
		a3 := env.Place(t, ctx, scenarios.Pod("bb-3", nil, contract.ResourceMemory, "10000"))
		if a2.Node != a1.Node || a3.Node != a1.Node {
			t.Errorf("binpack spread pods over nodes: %s, %s, %s", a1.Node, a2.Node, a3.Node)
		}
		if scenarios.GPUOf(a2) != scenarios.GPUOf(a1) || scenarios.GPUOf(a3) != scenarios.GPUOf(a1) {
			t.Errorf("binpack GPU policy used several GPUs: %s, %s, %s", scenarios.GPUOf(a1), scenarios.GPUOf(a2), scenarios.GPUOf(a3))
		}
	})
	t.Run("spread nodes, spread GPUs", func(t *testing.T) {
		defer env.Cleanup(t, ctx)
		e.settings(t, ctx, settings.Spread, settings.Spread)
		// One pod per node while nodes are empty, then a fourth beside one
		// of them, on another GPU of that node. Small shares, so that the
		// slot count is each GPU's load: a node's score is the mean load of
		// its GPUs (docs/placement.md), and 20,000 MiB on a 40 GB GPU would
		// load a node of 8 exactly as much as two on 80 GB GPUs.
		byNode := map[string]assign.Pod{}
		for i := range len(nodes) {
			a := env.Place(t, ctx, scenarios.Pod(fmt.Sprintf("ss-%d", i), nil, contract.ResourceMemory, "4000"))
			if prev, ok := byNode[a.Node]; ok {
				t.Errorf("spread put pod %d on %s beside %s while %v has an empty node", i, a.Node, scenarios.GPUOf(prev), nodes)
			}
			byNode[a.Node] = a
		}
		a := env.Place(t, ctx, scenarios.Pod("ss-last", nil, contract.ResourceMemory, "4000"))
		if prev, ok := byNode[a.Node]; ok && scenarios.GPUOf(prev) == scenarios.GPUOf(a) {
			t.Errorf("spread GPU policy stacked pods on GPU %s of %s while 7 were free", scenarios.GPUOf(a), a.Node)
		}
	})
	t.Run("binpack nodes, spread GPUs, with a pod overriding both", func(t *testing.T) {
		defer env.Cleanup(t, ctx)
		e.settings(t, ctx, settings.Binpack, settings.Spread)
		a1 := env.Place(t, ctx, scenarios.Pod("bs-1", nil, contract.ResourceMemory, "20000"))
		a2 := env.Place(t, ctx, scenarios.Pod("bs-2", nil, contract.ResourceMemory, "20000"))
		if a1.Node != a2.Node || scenarios.GPUOf(a1) == scenarios.GPUOf(a2) {
			t.Errorf("binpack nodes + spread GPUs: %s/%s and %s/%s; want one node, two GPUs", a1.Node, scenarios.GPUOf(a1), a2.Node, scenarios.GPUOf(a2))
		}
		a3 := env.Place(t, ctx, scenarios.Pod("bs-3", map[string]string{contract.AnnotationNodePolicy: "spread", contract.AnnotationGPUPolicy: "binpack"},
			contract.ResourceMemory, "20000"))
		if a3.Node == a1.Node {
			t.Errorf("a pod asking for node spread went to the used node %s", a3.Node)
		}
		a4 := env.Place(t, ctx, scenarios.Pod("bs-4", map[string]string{contract.AnnotationGPUPolicy: "binpack"}, contract.ResourceMemory, "20000"))
		if a4.Node != a1.Node && a4.Node != a3.Node {
			t.Fatalf("bs-4 on unexpected node %s", a4.Node)
		}
		used := map[string]bool{scenarios.GPUOf(a1): true, scenarios.GPUOf(a2): true, scenarios.GPUOf(a3): true}
		if !used[scenarios.GPUOf(a4)] {
			t.Errorf("a pod asking for GPU binpack got the empty GPU %s on %s", scenarios.GPUOf(a4), a4.Node)
		}
	})
}
