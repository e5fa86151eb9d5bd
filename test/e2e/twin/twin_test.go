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

	schedconfig "github.com/vgpu-io/vgpu/cmd/extender/config"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/kubescore"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/gpunode"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

// ns holds the sequences' pods; loadNS the nodes' CPU and memory load,
// which stays.
const ns, loadNS = "vgpu-twin", "vgpu-twin-load"

// TestTwin places one random sequence of GPU pods per policy pair through
// kube-scheduler + extender, configured exactly as the manifests deploy
// them (kustomize/base/scheduler: kube-scheduler's default score plugins
// and the extender at weight 10), and, pod by pod, asks the simulator's
// code for the nodes kube-scheduler may choose: lib/placement rates the
// nodes, placement.ExtenderPriorities turns the ratings into the
// extender's 0..10 as the extender does, and lib/kubescore adds
// kube-scheduler's own plugin scores and picks the highest totals
// (kube-scheduler breaks ties at random). So the real node must be one of
// the simulator's equally best, and its GPUs exactly the simulator's for
// that node. The simulator then books the real assignment, so that both go
// on from the same state. The nodes carry different CPU and memory loads
// and some pods request CPU and memory, so that kube-scheduler's own
// scores decide between nodes the extender rates alike; the test counts
// the pods for which the model changed the set of nodes allowed and wants
// some. The cluster has fewer than 100 nodes, so kube-scheduler scores
// every feasible node.
func TestTwin(t *testing.T) {
	c := cluster.Run(t, cluster.Options{NoScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	must(t, daemons.SetSettings(ctx, c, settings.Default()))
	ext, err := daemons.StartExtender(ctx, c)
	must(t, err)
	cfg, err := daemons.DeployedSchedulerConfig(ext.URL)
	must(t, err)
	prof, err := schedconfig.ScoreProfile(cfg, contract.DefaultSchedulerName)
	must(t, err)
	t.Logf("kube-scheduler's score plugins %v, extender weight %d", prof.Weights, prof.ExtenderWeight)
	c.SetSchedulerConfig(cfg)
	must(t, c.StartScheduler(ctx))
	_, err = daemons.StartWebhook(ctx, c)
	must(t, err)
	must(t, c.CreateNamespace(ctx, ns))
	must(t, c.CreateNamespace(ctx, loadNS))
	var nodes []string
	for _, s := range []gpunode.Spec{
		{Prefix: "a100", Count: 2, GPUs: 4, Model: gpunode.A100_80GB, SplitCount: 4},
		{Prefix: "h100", Count: 2, GPUs: 2, Model: gpunode.H100_80GB, SplitCount: 4},
		{Prefix: "t4", Count: 1, GPUs: 2, Model: gpunode.T4, SplitCount: 4},
	} {
		n, err := gpunode.Create(ctx, c.Client, s)
		must(t, err)
		nodes = append(nodes, n...)
	}
	must(t, c.WaitForNodesReady(ctx, nodes...))
	// Each node of a pair of GPU twins carries a different CPU and memory
	// load (pods bound by name, without a scheduler), some even, some
	// lopsided, so that NodeResourcesFit and BalancedAllocation tell them
	// apart.
	for i, load := range [][2]string{{"16", "64Gi"}, {"56", "200Gi"}, {"8", "500Gi"}, {"64", "32Gi"}, {"2", "4Gi"}} {
		must(t, createLoad(ctx, c, nodes[i], load[0], load[1]))
	}
	// One node asks pods to keep off unless nothing else fits: its
	// PreferNoSchedule taint costs it TaintToleration's whole 3 x 100
	// points, three steps of the extender's priority.
	must(t, preferNot(ctx, c, nodes[1]))

	// The extender learns the mix of shapes from every pod of its
	// scheduler as its informer adds them; the twin learns from the same
	// pods in the same order.
	mix := placement.NewMix(placement.MixOptions{HalfLife: placement.DefaultHalfLife})
	var changed, overruled, steps int
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
			pol.Mix = mix
			tw := newTwin(t, ctx, c, nodes, pol, prof)
			defer func() {
				tw.cleanup(t, ctx)
				waitSlots(t, ctx, ext, 0, len(nodes))
			}()
			r := rand.New(rand.NewPCG(uint64(i), 15))
			for k := range 12 {
				tw.step(t, ctx, randomPod(r, fmt.Sprintf("p%d-%02d", i, k)))
			}
			changed, overruled, steps = changed+tw.changed, overruled+tw.overruled, steps+12
		})
	}
	// Without kube-scheduler's own scores the simulator would allow, for
	// these pods, nodes kube-scheduler never picks (or miss the one it
	// picks): the model has to have decided something.
	t.Logf("kube-scheduler's own scores changed the simulator's equally best nodes for %d of %d pods; for %d the extender's best alone would not hold the real node", changed, steps, overruled)
	if changed == 0 || overruled == 0 {
		t.Errorf("kube-scheduler's own scores changed %d decisions and overruled the extender's best %d times; want both: the loads and the taint no longer tell nodes apart, and the model goes untested", changed, overruled)
	}
}

func preferNot(ctx context.Context, c *cluster.Cluster, name string) error {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "vgpu.io/twin-prefer-not", Effect: corev1.TaintEffectPreferNoSchedule})
	_, err = c.Client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	return err
}

// createLoad binds a pod that requests cpu and memory and no GPU to node.
func createLoad(ctx context.Context, c *cluster.Cluster, node, cpu, memory string) error {
	p := testutil.Pod("load-"+node, testutil.Namespace(loadNS), testutil.Node(node), testutil.Container("load"),
		testutil.Requests("load", "cpu", cpu, "memory", memory))
	p.Spec.AutomountServiceAccountToken = new(bool)
	_, err := c.Client.CoreV1().Pods(loadNS).Create(ctx, p, metav1.CreateOptions{})
	return err
}

type twin struct {
	c     *cluster.Cluster
	nodes []string
	l     *ledger.Ledger
	pol   placement.Policies
	prof  kubescore.Profile
	// changed counts the pods for which kube-scheduler's own scores
	// changed the set of nodes the extender's priorities alone allow;
	// overruled those whose real node is outside that set.
	changed, overruled int
}

// newTwin starts the simulator's ledger from the nodes' published
// inventories, as the extender builds its own.
func newTwin(t *testing.T, ctx context.Context, c *cluster.Cluster, nodes []string, pol placement.Policies, prof kubescore.Profile) *twin {
	tw := &twin{c: c, nodes: nodes, l: ledger.New(), pol: pol, prof: prof}
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
	req, err := request.FromPod(p)
	must(t, err)
	tw.pol.Mix.Observe(req)
	// The pod is created held back by a scheduling gate, so that the
	// extender's informer has counted it into the learned mix before
	// kube-scheduler asks for a score, as the twin did above; the model
	// reads the pod as the API server stored it (the webhook's and the
	// defaults' changes included).
	p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "vgpu.io/twin"}}
	gated, err := tw.c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s: %v", p.Name, err)
	}

	// The simulator's answer, from the cluster as it stands: every node
	// and every pod bound to one, as kube-scheduler's cache holds them.
	nodeList, err := tw.c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	must(t, err)
	podList, err := tw.c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	must(t, err)
	var nodes []*corev1.Node
	var pods []*corev1.Pod
	for i := range nodeList.Items {
		nodes = append(nodes, &nodeList.Items[i])
	}
	for i := range podList.Items {
		pods = append(pods, &podList.Items[i])
	}
	snap := kubescore.NewCluster(nodes, pods)
	if err := snap.Unmodelled(tw.prof, gated); err != nil {
		t.Fatal(err)
	}
	pol := tw.pol
	pol.Host = hostFree(nodes, pods)
	sc := placement.NewScorer(req, pol)
	var feasible []string
	var ratings []float64
	for _, n := range nodes {
		// kube-scheduler's own filters first; the extender sees only the
		// nodes they pass.
		if reason := snap.Fits(tw.prof, gated, n.Name); reason != "" {
			continue
		}
		v, reason := sc.Score(tw.l.Node(n.Name))
		if reason != "" {
			continue
		}
		feasible, ratings = append(feasible, n.Name), append(ratings, v)
	}
	if len(feasible) == 0 {
		t.Fatalf("pod %s fits no node in the simulator; the sequence is meant to fit", p.Name)
	}
	priorities := placement.ExtenderPriorities(ratings)
	plugins, err := snap.Scores(tw.prof, gated, feasible)
	must(t, err)
	bestIdx, totals := kubescore.Best(tw.prof, plugins, priorities)
	best := pick(feasible, bestIdx)
	// What the extender's priorities alone allow (the model without
	// kube-scheduler's plugins).
	alone, _ := kubescore.Best(kubescore.Profile{ExtenderWeight: tw.prof.ExtenderWeight}, make([]int64, len(feasible)), priorities)
	extBest := pick(feasible, alone)
	if !slices.Equal(best, extBest) {
		tw.changed++
	}

	gated.Spec.SchedulingGates = nil
	time.Sleep(300 * time.Millisecond)
	if _, err := tw.c.Client.CoreV1().Pods(ns).Update(ctx, gated, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("ungate %s: %v", p.Name, err)
	}
	got := waitBound(t, ctx, tw.c, p.Name)
	real, err := annotation.DecodeAssignment(got.Annotations[contract.AnnotationAssignment])
	if err != nil {
		t.Fatalf("pod %s bound to %s without a readable assignment: %v", p.Name, got.Spec.NodeName, err)
	}
	table := func() string {
		var b strings.Builder
		for i, n := range feasible {
			fmt.Fprintf(&b, " %s: rating %.4g, priority %d, plugins %d, total %d;", n, ratings[i], priorities[i], plugins[i], totals[i])
		}
		return b.String()
	}
	if !slices.Contains(best, got.Spec.NodeName) {
		t.Fatalf("pod %s: kube-scheduler chose %s, the simulator's equally best nodes are %v (the extender's alone %v);%s",
			p.Name, got.Spec.NodeName, best, extBest, table())
	}
	if !slices.Contains(extBest, got.Spec.NodeName) {
		tw.overruled++
	}
	sim, err := placement.Plan(tw.l, req, got.Spec.NodeName, pol)
	must(t, err)
	if a, b := devices(real), devices(sim); !slices.Equal(a, b) {
		t.Fatalf("pod %s on %s: extender gave %v, simulator %v", p.Name, got.Spec.NodeName, a, b)
	}
	t.Logf("%s → %s %v (simulator's best: %v, the extender's alone: %v)", p.Name, got.Spec.NodeName, devices(real), best, extBest)
	must(t, tw.l.Reserve(ns+"/"+p.Name, real))
}

func pick(names []string, idx []int) []string {
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = names[j]
	}
	return out
}

// hostFree is each node's allocatable CPU and memory less what the pods
// bound to it request, as the extender's books keep it
// (cmd/extender/internal/hosts).
func hostFree(nodes []*corev1.Node, pods []*corev1.Pod) func(string) placement.HostFree {
	free := map[string]placement.HostFree{}
	for _, n := range nodes {
		free[n.Name] = placement.HostFree{CPUMilli: n.Status.Allocatable.Cpu().MilliValue(), MemoryMiB: n.Status.Allocatable.Memory().Value() >> 20, Known: true}
	}
	for _, p := range pods {
		f, ok := free[p.Spec.NodeName]
		if !ok || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		cpu, mem := request.HostRequests(p)
		f.CPUMilli, f.MemoryMiB = f.CPUMilli-cpu, f.MemoryMiB-mem
		free[p.Spec.NodeName] = f
	}
	return func(n string) placement.HostFree { return free[n] }
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
// percentage, with or without a cores limit, and two-GPU pods; with or
// without CPU and memory requests.
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
	opts := []testutil.PodOption{testutil.Namespace(ns), testutil.Container("work", limits...)}
	// A third of the pods request no CPU or memory (kube-scheduler counts
	// 100m and 200 MiB for them), a third CPU alone, a third both.
	var requests []string
	switch r.IntN(3) {
	case 2:
		requests = append(requests, "memory", []string{"8Gi", "64Gi", "256Gi"}[r.IntN(3)])
		fallthrough
	case 1:
		requests = append(requests, "cpu", []string{"4", "16", "32"}[r.IntN(3)])
	}
	if len(requests) > 0 {
		opts = append(opts, testutil.Requests("work", requests...))
	}
	p := testutil.Pod(name, opts...)
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
