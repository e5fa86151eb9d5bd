// Package twin checks that vgpu's simulator is a digital twin of the real
// scheduling path (issue 15, docs/placement.md): the same pods, in the same
// order, from the same starting state, placed by kube-scheduler with vgpu's
// extender and by lib/placement (what `vgpuctl simulate placement` runs)
// land alike.
package twin

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	schedv1 "k8s.io/kube-scheduler/config/v1"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/gpunode"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

const ns = "vgpu-twin"

// TestTwin places one random sequence of GPU pods per policy pair through
// kube-scheduler + extender and, pod by pod, asks the simulator's code for
// the nodes it rates best. kube-scheduler's own score plugins are disabled
// in this scheduler's profile, so the node is decided by the extender's
// priorities alone: it normalises its ratings so that exactly the nodes
// rated best get 10 (cmd/extender's Prioritize), and kube-scheduler picks
// among equal totals at random. So the real node must be one of the
// simulator's equally best, and its GPUs exactly the simulator's for that
// node. The simulator then books the real assignment, so that both go on
// from the same state. The cluster has fewer than 100 nodes, so
// kube-scheduler scores every feasible node.
func TestTwin(t *testing.T) {
	c := cluster.Run(t, cluster.Options{NoScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	must(t, daemons.SetSettings(ctx, c, settings.Default()))
	ext, err := daemons.StartExtender(ctx, c)
	must(t, err)
	cfg, err := daemons.SchedulerConfig(ext.URL)
	must(t, err)
	// The default score plugins (NodeResourcesFit, BalancedAllocation,
	// ImageLocality, TaintToleration, NodeAffinity, PodTopologySpread,
	// InterPodAffinity) would add their own points to the extender's; the
	// simulator does not model them, so the twin's profile turns them off.
	cfg.Profiles[0].Plugins = &schedv1.Plugins{Score: schedv1.PluginSet{Disabled: []schedv1.Plugin{{Name: "*"}}}}
	c.SetSchedulerConfig(cfg)
	must(t, c.StartScheduler(ctx))
	_, err = daemons.StartWebhook(ctx, c)
	must(t, err)
	must(t, c.CreateNamespace(ctx, ns))
	var nodes []string
	for _, s := range []gpunode.Spec{
		{Prefix: "a100", Count: 2, GPUs: 4, Model: gpunode.A100_80GB, SplitCount: 4},
		{Prefix: "h100", Count: 1, GPUs: 2, Model: gpunode.H100_80GB, SplitCount: 4},
		{Prefix: "t4", Count: 1, GPUs: 2, Model: gpunode.T4, SplitCount: 4},
	} {
		n, err := gpunode.Create(ctx, c.Client, s)
		must(t, err)
		nodes = append(nodes, n...)
	}
	must(t, c.WaitForNodesReady(ctx, nodes...))

	// The extender learns the mix of shapes from every pod of its
	// scheduler as its informer adds them; the twin learns from the same
	// pods in the same order.
	mix := placement.NewMix(placement.MixOptions{HalfLife: placement.DefaultHalfLife})
	host := map[string]placement.HostFree{}
	for _, name := range nodes {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		must(t, err)
		// The sequences' pods request no CPU or memory: what a node has
		// free stays its allocatable.
		host[name] = placement.HostFree{CPUMilli: n.Status.Allocatable.Cpu().MilliValue(), MemoryMiB: n.Status.Allocatable.Memory().Value() >> 20, Known: true}
	}
	for i, pair := range [][2]settings.Policy{
		{settings.Binpack, settings.Binpack},
		{settings.Binpack, settings.Spread},
		{settings.Spread, settings.Binpack},
		{settings.Spread, settings.Spread},
		{settings.Fragmentation, settings.Fragmentation},
	} {
		t.Run(fmt.Sprintf("%s nodes, %s GPUs", pair[0], pair[1]), func(t *testing.T) {
			s := settings.Default()
			s.NodeSchedulerPolicy, s.GPUSchedulerPolicy = pair[0], pair[1]
			must(t, daemons.SetSettings(ctx, c, s))
			time.Sleep(time.Second) // the extender follows its settings by informer
			waitSlots(t, ctx, ext, 0, len(nodes))
			pol := placement.DefaultPolicies(s)
			pol.Mix, pol.Host = mix, func(n string) placement.HostFree { return host[n] }
			tw := newTwin(t, ctx, c, nodes, pol)
			defer func() {
				tw.cleanup(t, ctx)
				waitSlots(t, ctx, ext, 0, len(nodes))
			}()
			r := rand.New(rand.NewPCG(uint64(i), 15))
			for k := range 12 {
				tw.step(t, ctx, randomPod(r, fmt.Sprintf("p%d-%02d", i, k)))
			}
		})
	}
}

type twin struct {
	c     *cluster.Cluster
	nodes []string
	l     *ledger.Ledger
	pol   placement.Policies
}

// newTwin starts the simulator's ledger from the nodes' published
// inventories, as the extender builds its own.
func newTwin(t *testing.T, ctx context.Context, c *cluster.Cluster, nodes []string, pol placement.Policies) *twin {
	tw := &twin{c: c, nodes: nodes, l: ledger.New(), pol: pol}
	for _, name := range nodes {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		must(t, err)
		inv, err := annotation.DecodeDevices(n.Annotations[contract.AnnotationDevices])
		must(t, err)
		tw.l.SetInventory(name, inv)
	}
	return tw
}

// step places one pod both ways and compares.
func (tw *twin) step(t *testing.T, ctx context.Context, p *corev1.Pod) {
	t.Helper()
	// The simulator rates the nodes before the pod exists anywhere.
	req, err := request.FromPod(p)
	must(t, err)
	tw.pol.Mix.Observe(req)
	sc := placement.NewScorer(req, tw.pol)
	best, rated := []string(nil), map[string]float64{}
	for _, n := range tw.nodes {
		v, reason := sc.Score(tw.l.Node(n))
		if reason != "" {
			continue
		}
		rated[n] = v
		switch {
		case len(best) == 0 || v > rated[best[0]]:
			best = []string{n}
		case v == rated[best[0]]:
			best = append(best, n)
		}
	}
	if len(best) == 0 {
		t.Fatalf("pod %s fits no node in the simulator; the sequence is meant to fit", p.Name)
	}

	// The pod is created held back by a scheduling gate, so that the
	// extender's informer has counted it into the learned mix before
	// kube-scheduler asks for a score, as the twin did above.
	p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "vgpu.io/twin"}}
	if _, err := tw.c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s: %v", p.Name, err)
	}
	time.Sleep(300 * time.Millisecond)
	gated, err := tw.c.Client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
	must(t, err)
	gated.Spec.SchedulingGates = nil
	if _, err := tw.c.Client.CoreV1().Pods(ns).Update(ctx, gated, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("ungate %s: %v", p.Name, err)
	}
	got := waitBound(t, ctx, tw.c, p.Name)
	real, err := annotation.DecodeAssignment(got.Annotations[contract.AnnotationAssignment])
	if err != nil {
		t.Fatalf("pod %s bound to %s without a readable assignment: %v", p.Name, got.Spec.NodeName, err)
	}
	if !slices.Contains(best, got.Spec.NodeName) {
		t.Fatalf("pod %s: kube-scheduler chose %s (simulator's rating %v), the simulator's equally best nodes are %v (rated %v); all ratings %v",
			p.Name, got.Spec.NodeName, rated[got.Spec.NodeName], best, rated[best[0]], rated)
	}
	sim, err := placement.Plan(tw.l, req, got.Spec.NodeName, tw.pol)
	must(t, err)
	if a, b := devices(real), devices(sim); !slices.Equal(a, b) {
		t.Fatalf("pod %s on %s: extender gave %v, simulator %v", p.Name, got.Spec.NodeName, a, b)
	}
	t.Logf("%s → %s %v (simulator's best: %v)", p.Name, got.Spec.NodeName, devices(real), best)
	must(t, tw.l.Reserve(ns+"/"+p.Name, real))
}

// devices lists an assignment's vGPUs as container/uuid/MiB/cores, in
// order.
func devices(a assign.Pod) []string {
	var out []string
	for _, c := range a.Containers {
		for _, d := range c.Devices {
			out = append(out, fmt.Sprintf("%s/%s/%d/%d", c.Name, d.UUID, d.MemoryMiB, d.Cores))
		}
	}
	return out
}

// randomPod is one GPU pod of a mix of shapes: shares by memory or by
// percentage, with or without a cores limit, and two-GPU pods.
func randomPod(r *rand.Rand, name string) *corev1.Pod {
	gpus := 1
	var limits []string
	set := func(k string, v int) { limits = append(limits, k, strconv.Itoa(v)) }
	switch r.IntN(4) {
	case 0:
		set(contract.ResourceMemory, []int{4000, 10000, 20000}[r.IntN(3)])
	case 1:
		set(contract.ResourceMemoryPercentage, []int{10, 25, 50}[r.IntN(3)])
		set(contract.ResourceCores, []int{20, 30, 50}[r.IntN(3)])
	case 2:
		gpus = 2
		set(contract.ResourceMemoryPercentage, 30)
	default:
		set(contract.ResourceMemory, 8000)
		set(contract.ResourceCores, 25)
	}
	set(contract.ResourceGPU, gpus)
	p := testutil.Pod(name, testutil.Namespace(ns), testutil.Container("work", limits...))
	p.Spec.AutomountServiceAccountToken = new(bool)
	return p
}

func waitBound(t *testing.T, ctx context.Context, c *cluster.Cluster, name string) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Spec.NodeName != "" {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not bound after 60s (err %v)", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cleanup deletes the sequence's pods and waits until they are gone.
func (tw *twin) cleanup(t *testing.T, ctx context.Context) {
	zero := int64(0)
	must(t, tw.c.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{}))
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := tw.c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil && len(list.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods of %s not gone after 60s", ns)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSlots waits until the extender books slots vGPU slots on nodes GPU
// nodes in all, read from its /metrics: its ledger is then the twin's
// starting state.
func waitSlots(t *testing.T, ctx context.Context, ext *daemons.Extender, slots, nodes int) {
	t.Helper()
	const metric = "vgpu_extender_node_allocated_slots"
	deadline := time.Now().Add(30 * time.Second)
	var got, known int
	for time.Now().Before(deadline) {
		if m, err := ext.Metrics(ctx); err == nil {
			got, known = 0, 0
			for _, line := range strings.Split(m, "\n") {
				if strings.HasPrefix(line, metric+"{") {
					var v float64
					fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
					got, known = got+int(v), known+1
				}
			}
			if got == slots && known == nodes {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("extender books %d slots on %d nodes, want %d on %d", got, known, slots, nodes)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
