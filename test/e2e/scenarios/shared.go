package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
)

// admission: a bad pod is denied with the same message on both paths, by
// the same validation (lib/request), through the API server.
func admission(t *testing.T, ctx context.Context, e *Env) {
	priv := Pod("privileged", nil, contract.ResourceCores, "30")
	yes := true
	priv.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes}
	reqDiff := Pod("requests-differ", nil, contract.ResourceMemory, "1000")
	reqDiff.Spec.Containers[0].Resources.Requests = corev1.ResourceList{contract.ResourceMemory: resource.MustParse("2000")}
	cases := []struct {
		pod  *corev1.Pod
		want []string
	}{
		{Pod("cores-zero", nil, contract.ResourceCores, "0"), []string{`container "work"`, "nvidia.com/gpucores=0", "from 1 to 100"}},
		{Pod("cores-over", nil, contract.ResourceCores, "101"), []string{`container "work"`, "nvidia.com/gpucores=101", "from 1 to 100"}},
		{Pod("percent-over", nil, contract.ResourceMemoryPercentage, "120"), []string{`container "work"`, "nvidia.com/gpumem-percentage=120", "from 1 to 100"}},
		{Pod("both-memory", nil, contract.ResourceMemory, "1000", contract.ResourceMemoryPercentage, "10"), []string{`container "work"`, "both set"}},
		{Pod("too-much-memory", nil, contract.ResourceMemory, "90000"), []string{`container "work"`, "nvidia.com/gpumem=90000", "at most 81920"}},
		{Pod("fraction", nil, contract.ResourceCores, "1500m"), []string{`container "work"`, "nvidia.com/gpucores", "integer"}},
		{reqDiff, []string{`container "work"`, "nvidia.com/gpumem", "must be equal"}},
		{priv, []string{`container "work"`, "privileged"}},
	}
	for _, tc := range cases {
		_, err := e.C.Client.CoreV1().Pods(Namespace).Create(ctx, tc.pod, metav1.CreateOptions{})
		if err == nil {
			t.Errorf("pod %s was admitted", tc.pod.Name)
			continue
		}
		t.Logf("%s: %v", tc.pod.Name, err)
		for _, w := range append(tc.want, "denied the request", "pod "+Namespace+"/"+tc.pod.Name) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("pod %s denied with %q, which lacks %q", tc.pod.Name, err, w)
			}
		}
	}
	p, err := e.C.Client.CoreV1().Pods(Namespace).Create(ctx, Pod("valid", nil, contract.ResourceCores, "10"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	must(t, err)
	if err := e.Path.Admitted(p); err != nil {
		t.Errorf("valid pod on the %s path: %v", e.Path.Name(), err)
	}
	plain, err := e.C.Client.CoreV1().Pods(Namespace).Create(ctx, Pod("plain", nil, corev1.ResourceCPU.String(), "1"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	must(t, err)
	if plain.Spec.SchedulerName != corev1.DefaultSchedulerName || len(plain.Spec.ResourceClaims) > 0 {
		t.Errorf("a pod without vgpu resources was changed: scheduler %q, claims %v", plain.Spec.SchedulerName, plain.Spec.ResourceClaims)
	}
}

// wholeGPUs: gpu: 2 alone takes two GPUs whole (all their memory, all
// cores), and no share lands on them.
func wholeGPUs(t *testing.T, ctx context.Context, e *Env) {
	defer e.Cleanup(t, ctx)
	invs := e.Path.Inventories(t, ctx)
	a1 := e.Place(t, ctx, Pod("w-1", nil, contract.ResourceGPU, "2"))
	var shares []assign.Pod
	for i := range 4 {
		shares = append(shares, e.Place(t, ctx, Pod(fmt.Sprintf("w-share-%d", i), nil, contract.ResourceMemory, "1000")))
	}
	if n := len(a1.Containers[0].Devices); n != 2 {
		t.Fatalf("gpu: 2 got %d GPUs", n)
	}
	for _, d := range a1.Containers[0].Devices {
		_, g, _ := GPU(invs, d.UUID)
		if d.Cores != 100 || d.MemoryMiB != g.MemoryMiB {
			t.Errorf("whole GPU %s (%d MiB) given as %d MiB, %d cores", d.UUID, g.MemoryMiB, d.MemoryMiB, d.Cores)
		}
		for _, s := range shares {
			if GPUOf(s) == d.UUID {
				t.Errorf("a share landed on GPU %s, held whole by w-1", d.UUID)
			}
		}
	}
}

// distinctGPUs: gpu: N with a memory limit takes N shares on N different
// GPUs of one node.
func distinctGPUs(t *testing.T, ctx context.Context, e *Env) {
	defer e.Cleanup(t, ctx)
	for _, n := range []int{2, 4} {
		a := e.Place(t, ctx, Pod(fmt.Sprintf("n-%d", n), nil, contract.ResourceGPU, fmt.Sprint(n), contract.ResourceMemory, "3000", contract.ResourceCores, "10"))
		seen := map[string]bool{}
		for _, d := range a.Containers[0].Devices {
			if seen[d.UUID] {
				t.Errorf("gpu: %d got GPU %s twice: %+v", n, d.UUID, a.Containers[0].Devices)
			}
			seen[d.UUID] = true
			if d.MemoryMiB != 3000 || d.Cores != 10 {
				t.Errorf("gpu: %d share on %s: %d MiB %d cores, want 3000 and 10", n, d.UUID, d.MemoryMiB, d.Cores)
			}
		}
		if len(seen) != n {
			t.Errorf("gpu: %d landed on %d GPUs", n, len(seen))
		}
	}
}

// selectors: nvidia.com/use-gputype, nouse-gputype and use-gpuuuid steer a
// pod to the GPUs they allow.
func selectors(t *testing.T, ctx context.Context, e *Env) {
	defer e.Cleanup(t, ctx)
	invs := e.Path.Inventories(t, ctx)
	small, _ := modelOf(invs, e.Nodes[len(e.Nodes)-1])
	big, _ := modelOf(invs, e.Nodes[0])
	for i, tc := range []struct {
		ann  map[string]string
		want func(node, model string) bool
		what string
	}{
		{map[string]string{"nvidia.com/use-gputype": strings.ToLower(small)}, func(_, m string) bool { return m == small }, "use-gputype " + small},
		{map[string]string{"nvidia.com/use-gputype": strings.ToUpper(big)}, func(_, m string) bool { return m == big }, "use-gputype " + big},
		{map[string]string{"nvidia.com/nouse-gputype": big}, func(_, m string) bool { return m != big }, "nouse-gputype " + big},
	} {
		a := e.Place(t, ctx, Pod(fmt.Sprintf("sel-%d", i), tc.ann, contract.ResourceMemory, "1000"))
		_, g, _ := GPU(invs, GPUOf(a))
		if !tc.want(a.Node, g.Model) {
			t.Errorf("%s: pod got GPU %s (%s) on %s", tc.what, g.UUID, g.Model, a.Node)
		}
	}
	// One GPU by uuid, in the middle of a node that is not the first.
	want := invs[e.Nodes[1]].GPUs[5].UUID
	a := e.Place(t, ctx, Pod("sel-uuid", map[string]string{"nvidia.com/use-gpuuuid": want}, contract.ResourceMemory, "1000"))
	if GPUOf(a) != want {
		t.Errorf("use-gpuuuid %s: pod got %s on %s", want, GPUOf(a), a.Node)
	}
	a = e.Place(t, ctx, Pod("sel-nouuid", map[string]string{"nvidia.com/nouse-gpuuuid": GPUOf(a), "nvidia.com/use-gputype": big}, contract.ResourceMemory, "1000"))
	if GPUOf(a) == want {
		t.Errorf("nouse-gpuuuid %s: pod got it", want)
	}
}

// percentagePerModel: gpumem-percentage resolves against the memory of the
// GPU the share lands on.
func percentagePerModel(t *testing.T, ctx context.Context, e *Env) {
	defer e.Cleanup(t, ctx)
	invs := e.Path.Inventories(t, ctx)
	for i, node := range []string{e.Nodes[0], e.Nodes[len(e.Nodes)-1]} {
		model, mem := modelOf(invs, node)
		a := e.Place(t, ctx, Pod(fmt.Sprintf("pct-%d", i), map[string]string{"nvidia.com/use-gputype": model},
			contract.ResourceMemoryPercentage, "25", contract.ResourceCores, "30"))
		d := a.Containers[0].Devices[0]
		if d.MemoryMiB != mem/4 || d.Cores != 30 {
			t.Errorf("gpumem-percentage 25 / gpucores 30 on %s (%d MiB) gave %d MiB, %d cores; want %d MiB, 30", model, mem, d.MemoryMiB, d.Cores, mem/4)
		}
	}
}

// requeue: every GPU is held whole, one more pod waits; one pod is deleted:
// the waiting pod must be bound within 10 s.
func requeue(t *testing.T, ctx context.Context, e *Env) {
	defer e.Cleanup(t, ctx)
	gpus := 0
	for _, inv := range e.Path.Inventories(t, ctx) {
		gpus += len(inv.GPUs)
	}
	var fill []string
	for i := range gpus {
		name := fmt.Sprintf("fill-%02d", i)
		fill = append(fill, name)
		_, err := e.C.Client.CoreV1().Pods(Namespace).Create(ctx, Pod(name, nil, contract.ResourceGPU, "1"), metav1.CreateOptions{})
		must(t, err)
	}
	for _, n := range fill {
		e.WaitBound(t, ctx, n, 2*time.Minute)
	}
	_, err := e.C.Client.CoreV1().Pods(Namespace).Create(ctx, Pod("waiting", nil, contract.ResourceMemory, "40000"), metav1.CreateOptions{})
	must(t, err)
	// Let the scheduler reject it and park it as unschedulable.
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := e.C.Client.CoreV1().Pods(Namespace).Get(ctx, "waiting", metav1.GetOptions{})
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

	w, err := e.C.Client.CoreV1().Pods(Namespace).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "waiting").String()})
	must(t, err)
	defer w.Stop()
	zero := int64(0)
	start := time.Now()
	must(t, e.C.Client.CoreV1().Pods(Namespace).Delete(ctx, fill[3], metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-w.ResultChan():
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Modified && p.Spec.NodeName != "" {
				t.Logf("REQUEUE (%s path): the pending pod was bound to %s %.2fs after a pod was deleted", e.Path.Name(), p.Spec.NodeName, time.Since(start).Seconds())
				return
			}
		case <-timeout:
			t.Fatalf("the pending pod was not bound within 10s of a pod's deletion")
		}
	}
}

// burst: BurstNodes join, then 300 pods with random shares are created at
// once; the path's crash-prone component (Path.Crash) is SIGKILLed a third
// of the way in and restarted a second later. Every pod must end bound, and
// no GPU may hold more memory, cores or vGPUs than it has, by the path's
// record read back from the API server; the path's own count agrees.
func burst(t *testing.T, ctx context.Context, e *Env) {
	defer e.Cleanup(t, ctx)
	e.Path.AddNodes(t, ctx, BurstNodes)

	// 300 pods on 88 GPUs: about half the memory and the cores in demand,
	// so that all fit despite fragmentation, while many GPUs are shared by
	// several pods.
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
		specs = append(specs, Pod(fmt.Sprintf("burst-%03d", i), nil, kv...))
	}
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	next := make(chan *corev1.Pod)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				if _, err := e.C.Client.CoreV1().Pods(Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create %s: %w", p.Name, err)
				}
			}
		}()
	}
	start := time.Now()
	restarted := make(chan error, 1)
	for i, p := range specs {
		if i == pods/3 {
			list, err := e.C.Client.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{})
			must(t, err)
			n := 0
			for _, p := range list.Items {
				if p.Spec.NodeName != "" {
					n++
				}
			}
			what, restart := e.Path.Crash(t, ctx)
			t.Logf("%d pods created, %d bound: killed %s (SIGKILL)", i, n, what)
			go func() {
				time.Sleep(time.Second)
				restarted <- restart(ctx)
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
		t.Fatalf("restart: %v", err)
	}

	wctx, wcancel := context.WithTimeout(ctx, 4*time.Minute)
	defer wcancel()
	bound, err := e.C.WaitForPods(wctx, Namespace, "app=vgpu-e2e", pods, cluster.PodBound)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BURST (%s path): %d pods bound %.1fs after the first was created", e.Path.Name(), len(bound), time.Since(start).Seconds())
	invs, bookings := e.Path.Inventories(t, ctx), e.Path.Bookings(t, ctx)
	slots := CheckNoOvercommit(t, invs, bookings, len(bound))
	// The path's own count agrees with what the pods hold, and so does
	// what vgpuctl shows of every node.
	e.WaitBooked(t, ctx, slots)
	describeAgrees(t, ctx, e, invs, bookings)
}

// describeAgrees runs `vgpuctl describe node NAME -o json` for every node
// and compares what it shows booked on each GPU with the bookings.
func describeAgrees(t *testing.T, ctx context.Context, e *Env, invs map[string]device.Inventory, bookings map[string]assign.Pod) {
	t.Helper()
	bin, err := daemons.Binary("vgpuctl")
	must(t, err)
	type sum struct{ slots, mem, cores int64 }
	want := map[string]sum{}
	for _, a := range bookings {
		for _, c := range a.Containers {
			for _, d := range c.Devices {
				s := want[d.UUID]
				s.slots++
				s.mem += d.MemoryMiB
				s.cores += int64(d.Cores)
				want[d.UUID] = s
			}
		}
	}
	for node := range invs {
		out, err := exec.CommandContext(ctx, bin, "describe", "node", node, "-o", "json", "--kubeconfig", e.C.Kubeconfig).Output()
		if err != nil {
			t.Fatalf("vgpuctl describe node %s: %v", node, err)
		}
		var rep struct {
			Path string
			GPUs []struct {
				UUID               string
				SlotsUsed          int64
				MemoryAllocatedMiB int64
				CoresAllocated     int64
			}
		}
		must(t, json.Unmarshal(out, &rep))
		if rep.Path != string(e.Path.Name()) {
			t.Errorf("vgpuctl describe node %s reads the %q path's record on the %s path", node, rep.Path, e.Path.Name())
		}
		if len(rep.GPUs) != len(invs[node].GPUs) {
			t.Errorf("vgpuctl describe node %s shows %d GPUs, the node has %d", node, len(rep.GPUs), len(invs[node].GPUs))
		}
		for _, g := range rep.GPUs {
			if got := (sum{g.SlotsUsed, g.MemoryAllocatedMiB, g.CoresAllocated}); got != want[g.UUID] {
				t.Errorf("vgpuctl describe node %s: GPU %s booked %+v, the pods hold %+v", node, g.UUID, got, want[g.UUID])
			}
		}
	}
}

// CheckNoOvercommit sums the bookings per GPU and compares them with the
// inventories: memory (scaled), cores, split count, and a whole GPU
// (cores 100) alone. It returns the vGPU slots booked.
func CheckNoOvercommit(t *testing.T, invs map[string]device.Inventory, bookings map[string]assign.Pod, wantPods int) int {
	t.Helper()
	type gpu struct {
		g                device.GPU
		node             string
		split            int
		scaling          float64
		mem, cores, vgpu int64
		pods, whole      int
	}
	gpus := map[string]*gpu{}
	for n, inv := range invs {
		for _, g := range inv.GPUs {
			gpus[g.UUID] = &gpu{g: g, node: n, split: inv.SplitCount, scaling: inv.MemoryScaling}
		}
	}
	if len(bookings) != wantPods {
		t.Errorf("%d pods bound, %d booked", wantPods, len(bookings))
	}
	slots := 0
	for name, a := range bookings {
		for _, c := range a.Containers {
			for _, d := range c.Devices {
				g := gpus[d.UUID]
				if g == nil || g.node != a.Node {
					t.Errorf("pod %s on %s was given GPU %s, not one of its node", name, a.Node, d.UUID)
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
			t.Errorf("GPU %s (%s): %d MiB booked, it has %d", uuid, g.node, g.mem, limit)
		}
		if g.cores > 100 {
			t.Errorf("GPU %s (%s): %d%% cores booked", uuid, g.node, g.cores)
		}
		if g.vgpu > int64(g.split) {
			t.Errorf("GPU %s (%s): %d vGPUs, split count %d", uuid, g.node, g.vgpu, g.split)
		}
		if g.whole > 0 && g.pods > 1 {
			t.Errorf("GPU %s (%s) is held whole and shared by %d pods", uuid, g.node, g.pods)
		}
	}
	t.Logf("%d pods, %d vGPUs on %d GPUs: no GPU over its memory, cores or slots", len(bookings), slots, used)
	return slots
}

// webhookDown: with the webhook dead a vgpu pod is refused, naming the
// webhook, and pods without vgpu resources or in system namespaces still
// go through.
func webhookDown(t *testing.T, ctx context.Context, e *Env) {
	defer e.Cleanup(t, ctx)
	wh := e.Path.Webhook()
	wh.Kill()
	defer func() { must(t, wh.Start(ctx)) }()
	// The API server may first try a connection it kept open to the dead
	// webhook (a broken pipe); each try must be refused, and once it dials
	// afresh the error must say the webhook cannot be reached.
	var err error
	for try := 1; ; try++ {
		_, err = e.C.Client.CoreV1().Pods(Namespace).Create(ctx, Pod("vgpu-while-down", nil, contract.ResourceCores, "10"), metav1.CreateOptions{})
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
	if _, err := e.C.Client.CoreV1().Pods(Namespace).Create(ctx, Pod("plain-while-down", nil, corev1.ResourceCPU.String(), "100m"), metav1.CreateOptions{}); err != nil {
		t.Errorf("a pod without vgpu resources was refused while the webhook was down: %v", err)
	}
	// System namespaces never depend on the webhook.
	sys := Pod("system-while-down", nil, contract.ResourceGPU, "1")
	sys.Namespace = "kube-system"
	if _, err := e.C.Client.CoreV1().Pods("kube-system").Create(ctx, sys, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("a pod in kube-system was refused while the webhook was down: %v", err)
	}
}
