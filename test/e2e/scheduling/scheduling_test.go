// Package scheduling proves vgpu's extender and webhook against the real
// kube-scheduler and kube-apiserver (issue 4): placement by policy at node
// and GPU level, admission denials, a burst of pods with an extender crash
// in the middle, requeue after capacity frees, and a dead webhook. The
// subtests share one cluster and run in order; each cleans up its pods.
package scheduling

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/gpunode"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

const ns = "vgpu-e2e"

type env struct {
	c   *cluster.Cluster
	ext *daemons.Extender
	wh  *daemons.Webhook
}

func TestScheduling(t *testing.T) {
	c := cluster.Run(t, cluster.Options{NoScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	e := &env{c: c}
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
	nodes, err := gpunode.Create(ctx, c.Client, gpunode.Spec{Prefix: "a100", Count: 2, GPUs: 8, Model: gpunode.A100_80GB, SplitCount: 10})
	must(t, err)
	must(t, c.WaitForNodesReady(ctx, nodes...))
	e.waitLedger(t, ctx, 0, len(nodes))

	ok := t.Run("placement", func(t *testing.T) { e.placement(t, ctx, nodes) }) &&
		t.Run("admission", func(t *testing.T) { e.admission(t, ctx) }) &&
		t.Run("requeue", func(t *testing.T) { e.requeue(t, ctx, nodes) })
	ok = ok && t.Run("burst with extender crash", func(t *testing.T) { e.burst(t, ctx) })
	if ok {
		t.Run("webhook down", func(t *testing.T) { e.webhookDown(t, ctx) })
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// gpuPod is a pod of one container "work" with the given limits. It names
// no scheduler: the webhook routes it.
func gpuPod(name string, ann map[string]string, kv ...string) *corev1.Pod {
	p := testutil.Pod(name, testutil.Namespace(ns), testutil.Annotations(ann), testutil.Labels(map[string]string{"app": "vgpu-e2e"}),
		testutil.Container("work", kv...))
	p.Spec.AutomountServiceAccountToken = new(bool)
	return p
}

// place creates the pod, waits until it is bound and returns its
// assignment as read back from the API server.
func (e *env) place(t *testing.T, ctx context.Context, p *corev1.Pod) assign.Pod {
	t.Helper()
	if _, err := e.c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s: %v", p.Name, err)
	}
	got := e.waitBound(t, ctx, p.Name, 60*time.Second)
	a, err := annotation.DecodeAssignment(got.Annotations[contract.AnnotationAssignment])
	if err != nil {
		t.Fatalf("pod %s bound to %s without a readable assignment: %v", p.Name, got.Spec.NodeName, err)
	}
	if a.Node != got.Spec.NodeName {
		t.Fatalf("pod %s: assignment for node %s, bound to %s", p.Name, a.Node, got.Spec.NodeName)
	}
	return a
}

func (e *env) waitBound(t *testing.T, ctx context.Context, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, err := e.c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Spec.NodeName != "" {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not bound after %s (err %v)", name, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cleanup deletes every pod of the test namespace at once and waits for
// the extender to release their GPUs.
func (e *env) cleanup(t *testing.T, ctx context.Context) {
	t.Helper()
	zero := int64(0)
	must(t, e.c.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{}))
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := e.c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil && len(list.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods of %s not gone after 60s", ns)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.waitLedger(t, ctx, 0, -1)
}

// waitLedger waits until the extender books slots vGPU slots in all and
// (when nodes ≥ 0) knows that many GPU nodes, read from its /metrics.
func (e *env) waitLedger(t *testing.T, ctx context.Context, slots, nodes int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got, known int
	for time.Now().Before(deadline) {
		m, err := e.ext.Metrics(ctx)
		if err == nil {
			got, known = sumMetric(m, "vgpu_extender_node_allocated_slots"), countMetric(m, "vgpu_extender_node_allocated_slots")
			if got == slots && (nodes < 0 || known == nodes) {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("extender books %d slots on %d nodes, want %d on %d", got, known, slots, nodes)
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

func (e *env) settings(t *testing.T, ctx context.Context, node, gpu settings.Policy) {
	t.Helper()
	s := settings.Default()
	s.NodeSchedulerPolicy, s.GPUSchedulerPolicy = node, gpu
	must(t, daemons.SetSettings(ctx, e.c, s))
	// The extender picks it up from its informer; give the watch a moment.
	time.Sleep(500 * time.Millisecond)
}

func gpuOf(a assign.Pod) string { return a.Containers[0].Devices[0].UUID }

// placement: test 1 of issue 4.
func (e *env) placement(t *testing.T, ctx context.Context, nodes []string) {
	t.Run("binpack nodes, binpack GPUs", func(t *testing.T) {
		defer e.cleanup(t, ctx)
		e.settings(t, ctx, settings.Binpack, settings.Binpack)
		a1 := e.place(t, ctx, gpuPod("bb-1", nil, contract.ResourceMemory, "20000", contract.ResourceCores, "20"))
		a2 := e.place(t, ctx, gpuPod("bb-2", nil, contract.ResourceMemoryPercentage, "25", contract.ResourceCores, "30"))
		a3 := e.place(t, ctx, gpuPod("bb-3", nil, contract.ResourceMemory, "10000"))
		if a2.Node != a1.Node || a3.Node != a1.Node {
			t.Errorf("binpack spread pods over nodes: %s, %s, %s", a1.Node, a2.Node, a3.Node)
		}
		if gpuOf(a2) != gpuOf(a1) || gpuOf(a3) != gpuOf(a1) {
			t.Errorf("binpack GPU policy used several GPUs: %s, %s, %s", gpuOf(a1), gpuOf(a2), gpuOf(a3))
		}
		d := a2.Containers[0].Devices[0]
		if d.MemoryMiB != 81920/4 || d.Cores != 30 {
			t.Errorf("gpumem-percentage 25 / gpucores 30 on an 80 GiB A100 gave %d MiB, %d cores; want %d MiB, 30", d.MemoryMiB, d.Cores, 81920/4)
		}
	})
	t.Run("spread nodes, spread GPUs", func(t *testing.T) {
		defer e.cleanup(t, ctx)
		e.settings(t, ctx, settings.Spread, settings.Spread)
		a1 := e.place(t, ctx, gpuPod("ss-1", nil, contract.ResourceMemory, "20000"))
		a2 := e.place(t, ctx, gpuPod("ss-2", nil, contract.ResourceMemory, "20000"))
		a3 := e.place(t, ctx, gpuPod("ss-3", nil, contract.ResourceMemory, "20000"))
		if a1.Node == a2.Node {
			t.Errorf("spread put the first two pods on one node, %s, while %v has two", a1.Node, nodes)
		}
		if prev := map[string]assign.Pod{a1.Node: a1, a2.Node: a2}[a3.Node]; gpuOf(prev) == gpuOf(a3) {
			t.Errorf("spread GPU policy stacked pods on GPU %s of %s while 7 were free", gpuOf(a3), a3.Node)
		}
	})
	t.Run("binpack nodes, spread GPUs, with a pod overriding both", func(t *testing.T) {
		defer e.cleanup(t, ctx)
		e.settings(t, ctx, settings.Binpack, settings.Spread)
		a1 := e.place(t, ctx, gpuPod("bs-1", nil, contract.ResourceMemory, "20000"))
		a2 := e.place(t, ctx, gpuPod("bs-2", nil, contract.ResourceMemory, "20000"))
		if a1.Node != a2.Node || gpuOf(a1) == gpuOf(a2) {
			t.Errorf("binpack nodes + spread GPUs: %s/%s and %s/%s; want one node, two GPUs", a1.Node, gpuOf(a1), a2.Node, gpuOf(a2))
		}
		a3 := e.place(t, ctx, gpuPod("bs-3", map[string]string{contract.AnnotationNodePolicy: "spread", contract.AnnotationGPUPolicy: "binpack"},
			contract.ResourceMemory, "20000"))
		if a3.Node == a1.Node {
			t.Errorf("a pod asking for node spread went to the used node %s", a3.Node)
		}
		a4 := e.place(t, ctx, gpuPod("bs-4", map[string]string{contract.AnnotationGPUPolicy: "binpack"}, contract.ResourceMemory, "20000"))
		if a4.Node != a1.Node && a4.Node != a3.Node {
			t.Fatalf("bs-4 on unexpected node %s", a4.Node)
		}
		used := map[string]bool{gpuOf(a1): true, gpuOf(a2): true, gpuOf(a3): true}
		if !used[gpuOf(a4)] {
			t.Errorf("a pod asking for GPU binpack got the empty GPU %s on %s", gpuOf(a4), a4.Node)
		}
	})
	t.Run("whole GPUs are exclusive", func(t *testing.T) {
		defer e.cleanup(t, ctx)
		e.settings(t, ctx, settings.Binpack, settings.Binpack)
		a1 := e.place(t, ctx, gpuPod("w-1", nil, contract.ResourceGPU, "2"))
		a2 := e.place(t, ctx, gpuPod("w-2", nil, contract.ResourceMemory, "1000"))
		for _, d := range a1.Containers[0].Devices {
			if d.Cores != 100 || d.MemoryMiB != 81920 {
				t.Errorf("whole GPU %s given as %d MiB, %d cores", d.UUID, d.MemoryMiB, d.Cores)
			}
			if a2.Node == a1.Node && d.UUID == gpuOf(a2) {
				t.Errorf("a share landed on GPU %s, held whole by w-1", d.UUID)
			}
		}
	})
}

// admission: test 2 of issue 4, through the API server.
func (e *env) admission(t *testing.T, ctx context.Context) {
	priv := gpuPod("privileged", nil, contract.ResourceCores, "30")
	yes := true
	priv.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes}
	reqDiff := gpuPod("requests-differ", nil, contract.ResourceMemory, "1000")
	reqDiff.Spec.Containers[0].Resources.Requests = corev1.ResourceList{contract.ResourceMemory: resource.MustParse("2000")}
	cases := []struct {
		pod  *corev1.Pod
		want []string
	}{
		{gpuPod("cores-zero", nil, contract.ResourceCores, "0"), []string{`container "work"`, "nvidia.com/gpucores=0", "from 1 to 100"}},
		{gpuPod("cores-over", nil, contract.ResourceCores, "101"), []string{`container "work"`, "nvidia.com/gpucores=101", "from 1 to 100"}},
		{gpuPod("percent-over", nil, contract.ResourceMemoryPercentage, "120"), []string{`container "work"`, "nvidia.com/gpumem-percentage=120", "from 1 to 100"}},
		{gpuPod("both-memory", nil, contract.ResourceMemory, "1000", contract.ResourceMemoryPercentage, "10"), []string{`container "work"`, "both set"}},
		{gpuPod("too-much-memory", nil, contract.ResourceMemory, "90000"), []string{`container "work"`, "nvidia.com/gpumem=90000", "at most 81920"}},
		{gpuPod("fraction", nil, contract.ResourceCores, "1500m"), []string{`container "work"`, "nvidia.com/gpucores", "integer"}},
		{reqDiff, []string{`container "work"`, "nvidia.com/gpumem", "must be equal"}},
		{priv, []string{`container "work"`, "privileged"}},
	}
	for _, tc := range cases {
		_, err := e.c.Client.CoreV1().Pods(ns).Create(ctx, tc.pod, metav1.CreateOptions{})
		if err == nil {
			t.Errorf("pod %s was admitted", tc.pod.Name)
			continue
		}
		t.Logf("%s: %v", tc.pod.Name, err)
		for _, w := range append(tc.want, "denied the request", "pod "+ns+"/"+tc.pod.Name) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("pod %s denied with %q, which lacks %q", tc.pod.Name, err, w)
			}
		}
	}
	// A valid pod comes out routed to vgpu's scheduler with nvidia.com/gpu: 1.
	p, err := e.c.Client.CoreV1().Pods(ns).Create(ctx, gpuPod("valid", nil, contract.ResourceCores, "10"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	must(t, err)
	gpu := p.Spec.Containers[0].Resources.Limits[contract.ResourceGPU]
	req := p.Spec.Containers[0].Resources.Requests[contract.ResourceGPU]
	if p.Spec.SchedulerName != contract.DefaultSchedulerName || gpu.Value() != 1 || req.Value() != 1 {
		t.Errorf("valid pod: schedulerName %q, nvidia.com/gpu limit %s request %s", p.Spec.SchedulerName, gpu.String(), req.String())
	}
	plain, err := e.c.Client.CoreV1().Pods(ns).Create(ctx, gpuPod("plain", nil, corev1.ResourceCPU.String(), "1"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	must(t, err)
	if plain.Spec.SchedulerName != corev1.DefaultSchedulerName {
		t.Errorf("a pod without vgpu resources was rerouted to %q", plain.Spec.SchedulerName)
	}
}

// requeue: test 5 of issue 4. Both nodes are filled with whole GPUs (the
// scheduler's own nvidia.com/gpu count still shows free slots: only the
// extender knows the GPUs are taken), one more pod waits, one pod is
// deleted: the waiting pod must be bound within 10 s.
func (e *env) requeue(t *testing.T, ctx context.Context, nodes []string) {
	defer e.cleanup(t, ctx)
	e.settings(t, ctx, settings.Binpack, settings.Spread)
	var fill []string
	for i := range 8 * len(nodes) {
		name := fmt.Sprintf("fill-%02d", i)
		fill = append(fill, name)
		_, err := e.c.Client.CoreV1().Pods(ns).Create(ctx, gpuPod(name, nil, contract.ResourceGPU, "1"), metav1.CreateOptions{})
		must(t, err)
	}
	for _, n := range fill {
		e.waitBound(t, ctx, n, 2*time.Minute)
	}
	_, err := e.c.Client.CoreV1().Pods(ns).Create(ctx, gpuPod("waiting", nil, contract.ResourceMemory, "40000"), metav1.CreateOptions{})
	must(t, err)
	// Let the scheduler reject it and park it as unschedulable.
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := e.c.Client.CoreV1().Pods(ns).Get(ctx, "waiting", metav1.GetOptions{})
		must(t, err)
		if p.Spec.NodeName != "" {
			t.Fatalf("pod waiting was bound to %s with every GPU held whole", p.Spec.NodeName)
		}
		if cond := podScheduled(p); cond != nil && cond.Reason == corev1.PodReasonUnschedulable {
			t.Logf("waiting pod is unschedulable: %s", cond.Message)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pod waiting was never reported unschedulable")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // well into the unschedulable pool

	w, err := e.c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "waiting").String()})
	must(t, err)
	defer w.Stop()
	zero := int64(0)
	start := time.Now()
	must(t, e.c.Client.CoreV1().Pods(ns).Delete(ctx, fill[3], metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-w.ResultChan():
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Modified && p.Spec.NodeName != "" {
				took := time.Since(start)
				m, _ := e.ext.Metrics(ctx)
				t.Logf("REQUEUE: the pending pod was bound to %s %.2fs after a pod was deleted (extender requeue nudges so far: %d)",
					p.Spec.NodeName, took.Seconds(), sumMetric(m, "vgpu_extender_requeue_nudges_total"))
				return
			}
		case <-timeout:
			t.Fatalf("the pending pod was not bound within 10s of a pod's deletion")
		}
	}
}

func podScheduled(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodScheduled {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// burst: tests 3 and 4 of issue 4. 300 pods with random shares are created
// at once on 8 nodes; the extender is SIGKILLed while they are being bound
// and restarted. Every pod must end bound, and no GPU may hold more memory,
// cores or vGPUs than it has, by the assignments read back from the API.
func (e *env) burst(t *testing.T, ctx context.Context) {
	defer e.cleanup(t, ctx)
	e.settings(t, ctx, settings.Binpack, settings.Spread)
	more, err := gpunode.Create(ctx, e.c.Client, gpunode.Spec{Prefix: "h100", Count: 6, GPUs: 8, Model: gpunode.H100_80GB, SplitCount: 10})
	must(t, err)
	must(t, e.c.WaitForNodesReady(ctx, more...))
	e.waitLedger(t, ctx, 0, 8)

	// 300 pods on 64 GPUs of 80 GiB: about 60 % of the memory and 70 % of
	// the cores in demand, so that all fit despite fragmentation, while
	// many GPUs are shared by several pods.
	const pods = 300
	rng := rand.New(rand.NewPCG(4, 300))
	var specs []*corev1.Pod
	for i := range pods {
		var kv []string
		switch r := rng.IntN(100); {
		case r < 4:
			kv = []string{contract.ResourceGPU, "1"} // whole GPU
		case r < 14:
			kv = []string{contract.ResourceGPU, "2", contract.ResourceMemory, fmt.Sprint(1000 + rng.IntN(8000)), contract.ResourceCores, fmt.Sprint(1 + rng.IntN(15))}
		case r < 44:
			kv = []string{contract.ResourceMemoryPercentage, fmt.Sprint(5 + rng.IntN(16)), contract.ResourceCores, fmt.Sprint(1 + rng.IntN(20))}
		default:
			kv = []string{contract.ResourceMemory, fmt.Sprint(1000 + rng.IntN(9000)), contract.ResourceCores, fmt.Sprint(1 + rng.IntN(20))}
		}
		specs = append(specs, gpuPod(fmt.Sprintf("burst-%03d", i), nil, kv...))
	}
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	next := make(chan *corev1.Pod)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				if _, err := e.c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create %s: %w", p.Name, err)
				}
			}
		}()
	}
	// Kill the extender a third of the way into the burst, while pods are
	// being filtered and bound, and bring it back a second later: binds in
	// flight are cut, pods created meanwhile meet a dead extender.
	restarted := make(chan error, 1)
	for i, p := range specs {
		if i == pods/3 {
			list, err := e.c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			must(t, err)
			n := 0
			for _, p := range list.Items {
				if p.Spec.NodeName != "" {
					n++
				}
			}
			t.Logf("%d pods created, %d bound: killing the extender (SIGKILL)", i, n)
			e.ext.Kill()
			go func() {
				time.Sleep(time.Second)
				restarted <- e.ext.Start(ctx)
			}()
		}
		next <- p
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := <-restarted; err != nil {
		t.Fatalf("restart the extender: %v", err)
	}
	t.Log("extender restarted; its ledger was rebuilt from the API server")

	wctx, wcancel := context.WithTimeout(ctx, 4*time.Minute)
	defer wcancel()
	bound, err := e.c.WaitForPods(wctx, ns, "app=vgpu-e2e", pods, cluster.PodBound)
	if err != nil {
		t.Fatal(err)
	}
	checkNoOvercommit(t, ctx, e, bound)
}

// checkNoOvercommit sums the assignments of the bound pods per GPU and
// compares them with the nodes' inventories.
func checkNoOvercommit(t *testing.T, ctx context.Context, e *env, pods []corev1.Pod) {
	t.Helper()
	type gpu struct {
		g                device.GPU
		split            int
		scaling          float64
		mem, cores, vgpu int64
		pods, whole      int
	}
	gpus := map[string]*gpu{}
	nodeOf := map[string]string{}
	list, err := e.c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	must(t, err)
	for _, n := range list.Items {
		inv, err := annotation.DecodeDevices(n.Annotations[contract.AnnotationDevices])
		if err != nil {
			continue
		}
		for _, g := range inv.GPUs {
			gpus[g.UUID] = &gpu{g: g, split: inv.SplitCount, scaling: inv.MemoryScaling}
			nodeOf[g.UUID] = n.Name
		}
	}
	slots := 0
	for _, p := range pods {
		a, err := annotation.DecodeAssignment(p.Annotations[contract.AnnotationAssignment])
		if err != nil {
			t.Errorf("pod %s bound to %s without an assignment: %v", p.Name, p.Spec.NodeName, err)
			continue
		}
		for _, c := range a.Containers {
			for _, d := range c.Devices {
				g := gpus[d.UUID]
				if g == nil || nodeOf[d.UUID] != p.Spec.NodeName {
					t.Errorf("pod %s on %s was given GPU %s of node %q", p.Name, p.Spec.NodeName, d.UUID, nodeOf[d.UUID])
					continue
				}
				g.mem += d.MemoryMiB
				g.cores += int64(d.Cores)
				g.vgpu++
				g.pods++
				if d.Cores == 100 {
					g.whole++
				}
				slots++
			}
		}
	}
	used := 0
	for uuid, g := range gpus {
		if g.vgpu > 0 {
			used++
		}
		if limit := int64(float64(g.g.MemoryMiB) * g.scaling); g.mem > limit {
			t.Errorf("GPU %s (%s): %d MiB assigned, it has %d", uuid, nodeOf[uuid], g.mem, limit)
		}
		if g.cores > 100 {
			t.Errorf("GPU %s (%s): %d%% cores assigned", uuid, nodeOf[uuid], g.cores)
		}
		if g.vgpu > int64(g.split) {
			t.Errorf("GPU %s (%s): %d vGPUs, split count %d", uuid, nodeOf[uuid], g.vgpu, g.split)
		}
		if g.whole > 0 && g.pods > 1 {
			t.Errorf("GPU %s (%s) is held whole and shared by %d pods", uuid, nodeOf[uuid], g.pods)
		}
	}
	t.Logf("%d pods, %d vGPUs on %d GPUs: no GPU over its memory, cores or slots", len(pods), slots, used)
	// The restarted extender's books agree with the API server's.
	e.waitLedger(t, ctx, slots, -1)
}

// webhookDown: test 6 of issue 4.
func (e *env) webhookDown(t *testing.T, ctx context.Context) {
	defer e.cleanup(t, ctx)
	e.wh.Kill()
	defer func() { must(t, e.wh.Start(ctx)) }()
	// The API server may first try a connection it kept open to the dead
	// webhook (a broken pipe); each try must be refused, and once it dials
	// afresh the error must say the webhook cannot be reached.
	var err error
	for try := 1; ; try++ {
		_, err = e.c.Client.CoreV1().Pods(ns).Create(ctx, gpuPod("vgpu-while-down", nil, contract.ResourceCores, "10"), metav1.CreateOptions{})
		if err == nil {
			t.Fatal("a vgpu pod was admitted while the webhook was down: it would bypass validation")
		}
		if !strings.Contains(err.Error(), `failed calling webhook "mutate.pods.vgpu.io"`) {
			t.Fatalf("error %q does not name the webhook", err)
		}
		if strings.Contains(err.Error(), "connect: connection refused") || try == 3 {
			break
		}
		t.Logf("try %d refused on a stale connection: %v", try, err)
	}
	t.Logf("vgpu pod refused: %v", err)
	if !strings.Contains(err.Error(), "connect: connection refused") {
		t.Errorf("error %q lacks %q", err, "connect: connection refused")
	}
	if _, err := e.c.Client.CoreV1().Pods(ns).Create(ctx, gpuPod("plain-while-down", nil, corev1.ResourceCPU.String(), "100m"), metav1.CreateOptions{}); err != nil {
		t.Errorf("a pod without vgpu resources was refused while the webhook was down: %v", err)
	}
	// System namespaces never depend on the webhook.
	sys := gpuPod("system-while-down", nil, contract.ResourceGPU, "1")
	sys.Namespace = "kube-system"
	if _, err := e.c.Client.CoreV1().Pods("kube-system").Create(ctx, sys, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("a pod in kube-system was refused while the webhook was down: %v", err)
	}
}
