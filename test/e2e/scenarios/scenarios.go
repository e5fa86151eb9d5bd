// Package scenarios holds the end-to-end scenarios that both scheduling
// paths must pass (docs/dra.md): test/e2e/scheduling runs them on the
// extender path, test/e2e/dra on the DRA path, each on its own cluster with
// the same nodes (Fixture). A Path says what differs between the two: how a
// pod's shares are read back, what the webhook makes of a valid pod, which
// component a burst survives the crash of, and what placement promises.
//
// Table is the list; a scenario that does not run on a path says why. What
// only one path has is tested in its own suite: on the DRA path the flood
// past capacity, prepare over the kubelet's socket and switching a node
// between the paths (test/e2e/dra); on the extender path, the device
// plugin and the extender's own behaviour (test/e2e/deviceplugin, the
// extender's packages).
package scenarios

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

// PathName names a scheduling path.
type PathName string

const (
	Extender PathName = "extender"
	DRA      PathName = "dra"
)

// Namespace holds the scenarios' pods.
const Namespace = "vgpu-e2e"

// Fixture are the nodes both paths start with: two models of different
// memory, so that percentages and type selectors have something to tell
// apart, split count 10 (settings.Default).
var Fixture = []gpunode.Spec{
	{Prefix: "a100", Count: 2, GPUs: 8, Model: gpunode.A100_80GB, SplitCount: 10},
	{Prefix: "a40g", Count: 1, GPUs: 8, Model: gpunode.A100_40GB, SplitCount: 10},
}

// BurstNodes join for the burst.
var BurstNodes = gpunode.Spec{Prefix: "h100", Count: 6, GPUs: 8, Model: gpunode.H100_80GB, SplitCount: 10}

// Path is one scheduling path set up on a cluster with the webhook running
// and Namespace created.
type Path interface {
	Name() PathName
	Cluster() *cluster.Cluster
	Webhook() *daemons.Webhook
	// AddNodes creates the nodes of spec, ready to take pods on this path,
	// and returns their names.
	AddNodes(t *testing.T, ctx context.Context, spec gpunode.Spec) []string
	// Inventories are the GPU nodes as this path publishes them.
	Inventories(t *testing.T, ctx context.Context) map[string]device.Inventory
	// Bookings are the shares of Namespace's bound pods, by pod name, read
	// from the path's record (assignment annotation, or allocated claims).
	Bookings(t *testing.T, ctx context.Context) map[string]assign.Pod
	// Booked is the number of vGPU slots the path itself counts as taken
	// in the cluster: the extender's ledger, or the allocated claims.
	Booked(ctx context.Context) (int, error)
	// Admitted checks a valid vgpu pod as the webhook returns it.
	Admitted(p *corev1.Pod) error
	// Crash kills, with SIGKILL, what the burst must survive on this path,
	// and returns what restarts it.
	Crash(t *testing.T, ctx context.Context) (what string, restart func(context.Context) error)
	// Placement asserts what this path promises about where shares go.
	Placement(t *testing.T, ctx context.Context, e *Env)
}

// Scenario is one entry of Table.
type Scenario struct {
	Name string
	// On lists the paths it runs on.
	On []PathName
	// Why says why it does not run on the others, or how it differs.
	Why string
	Run func(t *testing.T, ctx context.Context, e *Env)
}

var both = []PathName{Extender, DRA}

// Table is every shared scenario, in the order they run.
var Table = []Scenario{
	{Name: "placement", On: both, Run: func(t *testing.T, ctx context.Context, e *Env) { e.Path.Placement(t, ctx, e) },
		Why: "what it asserts differs: binpack/spread at node and GPU level on the extender path; on the DRA path, which has no scoring of devices, first fit in device order (docs/dra.md#policies)"},
	{Name: "admission", On: both, Run: admission},
	{Name: "whole GPUs are exclusive", On: both, Run: wholeGPUs},
	{Name: "gpu N on distinct GPUs", On: both, Run: distinctGPUs},
	{Name: "type and uuid selectors", On: both, Run: selectors},
	{Name: "gpumem-percentage per model", On: both, Run: percentagePerModel},
	{Name: "requeue", On: both, Run: requeue},
	{Name: "burst with a crash", On: both, Run: burst,
		Why: "what crashes differs: the extender on the extender path; on the DRA path no vgpu process is in the scheduling loop, so every node agent (which publishes the slices) is killed and restarted"},
	{Name: "webhook down", On: both, Run: webhookDown},
}

// Env is what a scenario works with.
type Env struct {
	Path  Path
	C     *cluster.Cluster
	Nodes []string
}

// Run runs Table on p, stopping after the first scenario that fails (they
// share the cluster). nodes are the Fixture's.
func Run(t *testing.T, ctx context.Context, p Path, nodes []string) {
	e := &Env{Path: p, C: p.Cluster(), Nodes: nodes}
	for _, s := range Table {
		if !slices.Contains(s.On, p.Name()) {
			t.Run(s.Name, func(t *testing.T) { t.Skipf("not on the %s path: %s", p.Name(), s.Why) })
			continue
		}
		if !t.Run(s.Name, func(t *testing.T) { s.Run(t, ctx, e) }) {
			return
		}
	}
}

// Pod is a pod of one container "work" with the given limits, written as
// for the extender path (the seed's style): the webhook routes it.
func Pod(name string, ann map[string]string, kv ...string) *corev1.Pod {
	p := testutil.Pod(name, testutil.Namespace(Namespace), testutil.Annotations(ann), testutil.Labels(map[string]string{"app": "vgpu-e2e"}),
		testutil.Container("work", kv...))
	p.Spec.AutomountServiceAccountToken = new(bool)
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Place creates the pod, waits until it is bound and returns its shares as
// the path records them.
func (e *Env) Place(t *testing.T, ctx context.Context, p *corev1.Pod) assign.Pod {
	t.Helper()
	if _, err := e.C.Client.CoreV1().Pods(Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s: %v", p.Name, err)
	}
	got := e.WaitBound(t, ctx, p.Name, 60*time.Second)
	// The record may trail the binding by a moment (the claim's status).
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, ok := e.Path.Bookings(t, ctx)[p.Name]
		if ok && len(a.Containers) > 0 {
			if a.Node != got.Spec.NodeName {
				t.Fatalf("pod %s: booked on node %s, bound to %s", p.Name, a.Node, got.Spec.NodeName)
			}
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s bound to %s without a readable booking", p.Name, got.Spec.NodeName)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitBound waits until the pod is bound.
func (e *Env) WaitBound(t *testing.T, ctx context.Context, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, err := e.C.Client.CoreV1().Pods(Namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Spec.NodeName != "" {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not bound after %s (err %v)", name, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Cleanup deletes every pod of Namespace at once and waits until the path
// books nothing.
func (e *Env) Cleanup(t *testing.T, ctx context.Context) {
	t.Helper()
	zero := int64(0)
	must(t, e.C.Client.CoreV1().Pods(Namespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{}))
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := e.C.Client.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{})
		if err == nil && len(list.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods of %s not gone after 60s", Namespace)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.WaitBooked(t, ctx, 0)
}

// WaitBooked waits until the path counts slots vGPU slots taken.
func (e *Env) WaitBooked(t *testing.T, ctx context.Context, slots int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got int
	var err error
	for time.Now().Before(deadline) {
		if got, err = e.Path.Booked(ctx); err == nil && got == slots {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the %s path books %d vGPU slots (%v), want %d", e.Path.Name(), got, err, slots)
}

// GPU finds a GPU by uuid in the inventories, with its node.
func GPU(invs map[string]device.Inventory, uuid string) (node string, g device.GPU, ok bool) {
	for n, inv := range invs {
		for _, g := range inv.GPUs {
			if g.UUID == uuid {
				return n, g, true
			}
		}
	}
	return "", device.GPU{}, false
}

// GPUOf is the GPU of the first share of a booking.
func GPUOf(a assign.Pod) string { return a.Containers[0].Devices[0].UUID }

func podScheduled(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodScheduled {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func modelOf(invs map[string]device.Inventory, node string) (string, int64) {
	g := invs[node].GPUs[0]
	return g.Model, g.MemoryMiB
}
