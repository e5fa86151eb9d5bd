package dra

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/booking"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/e2e/scenarios"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

// TestScenarios runs the scenarios both paths share (test/e2e/scenarios)
// on the DRA path: the stock kube-scheduler, kube-controller-manager's
// resourceclaim controller, node agents in DRA mode and the webhook in DRA
// mode turning seed-style pods into claims.
func TestScenarios(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := draCluster(ctx, t, 10)
	p := &draPath{c: c, agents: map[string]*daemons.Process{}}
	var err error
	if p.wh, err = daemons.StartWebhook(ctx, c, "--mode=dra"); err != nil {
		t.Fatal(err)
	}
	must(t, c.CreateNamespace(ctx, scenarios.Namespace))
	var nodes []string
	for _, spec := range scenarios.Fixture {
		nodes = append(nodes, p.AddNodes(t, ctx, spec)...)
	}
	scenarios.Run(t, ctx, p, nodes)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// draPath is the DRA path for the shared scenarios.
type draPath struct {
	c      *cluster.Cluster
	wh     *daemons.Webhook
	agents map[string]*daemons.Process // by node
}

func (p *draPath) Name() scenarios.PathName  { return scenarios.DRA }
func (p *draPath) Cluster() *cluster.Cluster { return p.c }
func (p *draPath) Webhook() *daemons.Webhook { return p.wh }

// AddNodes creates the nodes without inventory and runs a node agent in DRA
// mode for each, which publishes its slice.
func (p *draPath) AddNodes(t *testing.T, ctx context.Context, spec gpunode.Spec) []string {
	t.Helper()
	spec.NoInventory = true
	var names []string
	for i := range spec.Count {
		n, err := gpunode.Node(spec, i)
		must(t, err)
		_, err = p.c.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		must(t, err)
		names = append(names, n.Name)
		agent, err := daemons.NodeAgent(p.c, n.Name, gpunode.MockFlag(spec.Model, spec.GPUs), "--mode=dra")
		must(t, err)
		must(t, agent.Start(ctx))
		p.agents[n.Name] = agent
	}
	must(t, p.c.WaitForNodesReady(ctx, names...))
	waitSlices(ctx, t, p.c, len(p.agents), spec.GPUs)
	return names
}

func (p *draPath) Inventories(t *testing.T, ctx context.Context) map[string]device.Inventory {
	t.Helper()
	rs := listSlices(ctx, t, p.c)
	out := map[string]device.Inventory{}
	for _, s := range rs {
		if inv, ok := dra.Inventory(s.Spec.Pool.Name, rs); ok {
			out[s.Spec.Pool.Name] = inv
		}
	}
	return out
}

// Bookings reads the claims allocated on each node with lib/booking, as
// vgpuctl and the monitor do; a pod's claims make one booking.
func (p *draPath) Bookings(t *testing.T, ctx context.Context) map[string]assign.Pod {
	t.Helper()
	rs := listSlices(ctx, t, p.c)
	claims, err := p.c.Client.ResourceV1().ResourceClaims(scenarios.Namespace).List(ctx, metav1.ListOptions{})
	must(t, err)
	pods, err := p.c.Client.CoreV1().Pods(scenarios.Namespace).List(ctx, metav1.ListOptions{})
	must(t, err)
	var cs []*resourcev1.ResourceClaim
	for i := range claims.Items {
		cs = append(cs, &claims.Items[i])
	}
	out := map[string]assign.Pod{}
	for _, s := range rs {
		node := s.Spec.Pool.Name
		bs, warnings := booking.FromClaims(node, rs, cs, pods.Items)
		for _, w := range warnings {
			t.Errorf("unreadable claim: %s", w)
		}
		for _, b := range bs {
			if b.Pod == "" {
				continue // allocated, not reserved yet
			}
			a := out[b.Pod]
			a.Node = b.Assignment.Node
			a.Containers = append(a.Containers, b.Assignment.Containers...)
			out[b.Pod] = a
		}
	}
	return out
}

// Booked counts the vGPU slots the allocated claims consume.
func (p *draPath) Booked(ctx context.Context) (int, error) {
	claims, err := p.c.Client.ResourceV1().ResourceClaims(scenarios.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, cl := range claims.Items {
		if cl.Status.Allocation == nil {
			continue
		}
		for _, r := range cl.Status.Allocation.Devices.Results {
			q := r.ConsumedCapacity[dra.CapVGPUs]
			n += int(q.Value())
		}
	}
	return n, nil
}

// Admitted: a valid pod comes out with a claim from a template in its
// container, no nvidia.com resources left, for the stock scheduler.
func (p *draPath) Admitted(pod *corev1.Pod) error {
	c := pod.Spec.Containers[0]
	for r := range c.Resources.Limits {
		if strings.HasPrefix(string(r), "nvidia.com/") {
			return fmt.Errorf("limit %s left on the pod", r)
		}
	}
	if pod.Spec.SchedulerName != corev1.DefaultSchedulerName {
		return fmt.Errorf("schedulerName %q: the stock scheduler places DRA pods", pod.Spec.SchedulerName)
	}
	if len(pod.Spec.ResourceClaims) != 1 || pod.Spec.ResourceClaims[0].ResourceClaimTemplateName == nil ||
		len(c.Resources.Claims) != 1 || c.Resources.Claims[0].Name != pod.Spec.ResourceClaims[0].Name {
		return fmt.Errorf("no claim from a template in the container: claims %+v, container uses %+v", pod.Spec.ResourceClaims, c.Resources.Claims)
	}
	return nil
}

// Crash kills every node agent: nothing of vgpu's is in the DRA path's
// scheduling cycle, so what a crash can hurt is the slices they publish.
func (p *draPath) Crash(t *testing.T, ctx context.Context) (string, func(context.Context) error) {
	for _, a := range p.agents {
		a.Kill()
	}
	return fmt.Sprintf("all %d node agents", len(p.agents)), func(ctx context.Context) error {
		for _, a := range p.agents {
			if err := a.Start(ctx); err != nil {
				return err
			}
		}
		return nil
	}
}

// Placement: the DRA allocator takes the first device that fits, in the
// order of the node's slice (docs/dra.md#policies): shares pinned to one
// node fill gpu-0 up to the split count before gpu-1 gets one. GPU-level
// spread does not hold on this path, and nothing is asserted at node level:
// kube-scheduler scores nodes without seeing claimed GPU capacity.
func (p *draPath) Placement(t *testing.T, ctx context.Context, e *scenarios.Env) {
	defer e.Cleanup(t, ctx)
	node := e.Nodes[0]
	inv := e.Path.Inventories(t, ctx)[node]
	per := map[int]int{}
	for i := range inv.SplitCount + 2 {
		pod := scenarios.Pod(fmt.Sprintf("ff-%02d", i), nil, contract.ResourceMemory, "1000", contract.ResourceCores, "5")
		pod.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
		// One at a time, so the order is the scheduler's, not the queue's.
		a := e.Place(t, ctx, pod)
		idx := slices.IndexFunc(inv.GPUs, func(g device.GPU) bool { return g.UUID == scenarios.GPUOf(a) })
		per[inv.GPUs[idx].Index]++
	}
	if per[0] != inv.SplitCount || per[1] != 2 || len(per) != 2 {
		t.Fatalf("shares per GPU index %v: want GPU 0 full (%d) before GPU 1 gets 2", per, inv.SplitCount)
	}
}

func listSlices(ctx context.Context, t *testing.T, c *cluster.Cluster) []*resourcev1.ResourceSlice {
	t.Helper()
	list, err := c.Client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
	must(t, err)
	var out []*resourcev1.ResourceSlice
	for i := range list.Items {
		if list.Items[i].Spec.Driver == dra.Driver {
			out = append(out, &list.Items[i])
		}
	}
	return out
}
