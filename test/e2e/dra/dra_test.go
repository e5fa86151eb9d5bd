// Package dra tests the DRA path (docs/dra.md) on the real control plane:
// node agents in DRA mode publish ResourceSlices for simulated GPU nodes,
// the stock kube-scheduler, with no extender, allocates shares of them, and
// kube-controller-manager's resourceclaim controller makes each pod's claims
// from its ResourceClaimTemplates and frees them when the pod goes. Beside
// the scenarios both paths share (TestScenarios), it floods the cluster past
// its capacity, prepares a claim over the kubelet's socket, and switches a
// node between the paths.
package dra

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/gpunode"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

const (
	nodes, gpusPerNode, split = 4, 8, 4
	ns                        = "e2e-dra"
)

func TestStockSchedulerAllocatesShares(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := draCluster(ctx, t, split)

	var names []string
	for i := range nodes {
		// A mix of models, so percentages resolve per model.
		model := gpunode.A100_40GB
		if i%2 == 1 {
			model = gpunode.H100_80GB
		}
		n, err := gpunode.Node(gpunode.Spec{Prefix: "dra-node", GPUs: gpusPerNode, Model: model, NoInventory: true}, i)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		names = append(names, n.Name)
		if err := daemons.StartNodeAgent(ctx, c, n.Name, gpunode.MockFlag(model, gpusPerNode), "--mode=dra"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitForNodesReady(ctx, names...); err != nil {
		t.Fatal(err)
	}
	slices := waitSlices(ctx, t, c, nodes, gpusPerNode)
	for _, n := range names {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if q, ok := node.Status.Allocatable["nvidia.com/gpu"]; ok && !q.IsZero() {
			t.Errorf("node %s offers nvidia.com/gpu %s in DRA mode: one GPU, one booking", n, q.String())
		}
	}
	models, _ := dra.ModelsOf(slices)
	if len(models) != 2 {
		t.Fatalf("models %v: want A100 and H100", models)
	}
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}

	seedStylePodRunsThroughTheWebhook(ctx, t, c)

	// 300 pods at once, far more than fits: 32 GPUs × 4 slots = 128 slots.
	small := request.Container{Count: 1, MemoryMiB: 2000}
	kinds := []request.Container{
		{Count: 1, MemoryMiB: 10000, Cores: 30},
		{Count: 1, MemoryPercent: 25},
		{Count: 2, MemoryMiB: 5000, Cores: 10},
		small,
		{Count: 1, MemoryMiB: 10000, Cores: 30},
		{Count: 1, MemoryPercent: 25},
		small,
		small,
		{Count: 1, Exclusive: true},
		small,
	}
	const pods = 300
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	sem := make(chan struct{}, 16)
	kindOf := map[string]request.Container{}
	for i := range pods {
		k := kinds[i%len(kinds)]
		k.Name = "cuda"
		name := fmt.Sprintf("p-%03d", i)
		kindOf[name] = k
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs <- createTemplatePod(ctx, c, name, k, models)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the scheduler has had its say on every pod: bound, or
	// marked unschedulable.
	var bound, pendingSmall int
	for ctx.Err() == nil {
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=dra"})
		if err != nil {
			t.Fatal(err)
		}
		var unsched int
		bound, pendingSmall = 0, 0
		for _, p := range list.Items {
			if p.Spec.NodeName != "" {
				bound++
				continue
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodScheduled && cond.Reason == corev1.PodReasonUnschedulable {
					unsched++
					if kindOf[p.Name] == (request.Container{Name: "cuda", Count: 1, MemoryMiB: 2000}) {
						pendingSmall++
					}
				}
			}
		}
		if bound+unsched == pods {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	elapsed := time.Since(start)
	t.Logf("%d claim pods created at once: %d bound, %d unschedulable; every pod decided %s after the first was created",
		pods, bound, pods-bound, elapsed.Round(time.Millisecond))
	checkAllocations(ctx, t, c, slices, kindOf, pendingSmall > 0, small.MemoryMiB)
	if pendingSmall > 0 {
		small.Name = "cuda"
		freedShareTakenWithin10s(ctx, t, c, kindOf, small)
	}
}

// freedShareTakenWithin10s: with the cluster full and small pods pending,
// a bound small pod is deleted; kube-controller-manager frees its claim and
// a pending pod (a small one fits for sure; a larger one may fit where the
// freed share was) must be bound within 10 s.
func freedShareTakenWithin10s(ctx context.Context, t *testing.T, c *cluster.Cluster, kindOf map[string]request.Container, small request.Container) {
	t.Helper()
	list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=dra"})
	if err != nil {
		t.Fatal(err)
	}
	victim, pending := "", map[string]bool{}
	for _, p := range list.Items {
		if p.Spec.NodeName == "" {
			pending[p.Name] = true
		} else if kindOf[p.Name] == small && victim == "" {
			victim = p.Name
		}
	}
	if victim == "" {
		t.Fatal("no small pod bound")
	}
	zero := int64(0)
	start := time.Now()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, victim, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	for time.Since(start) < 30*time.Second {
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=dra"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Items {
			if pending[p.Name] && p.Spec.NodeName != "" {
				took := time.Since(start)
				t.Logf("REQUEUE (dra path, full cluster, %d pods pending): pending pod %s (%+v) bound to %s %.2fs after %s was deleted",
					len(pending), p.Name, kindOf[p.Name], p.Spec.NodeName, took.Seconds(), victim)
				if took > 10*time.Second {
					t.Errorf("a pending pod took %s to take a freed share: want at most 10s", took.Round(time.Millisecond))
				}
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no pending pod was bound within 30s of %s's deletion", victim)
}

// seedStylePodRunsThroughTheWebhook: a pod written as for the extender path
// is turned into a claim by the webhook in DRA mode, kube-controller-manager
// makes the claim from the webhook's template, and the stock scheduler
// places it on a GPU its selector allows, with the percentage resolved
// against that GPU's memory.
func seedStylePodRunsThroughTheWebhook(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	t.Helper()
	if _, err := daemons.StartWebhook(ctx, c, "--mode=dra"); err != nil {
		t.Fatal(err)
	}
	pod := testutil.Pod("seed", testutil.Namespace(ns), testutil.Annotations(map[string]string{"nvidia.com/use-gputype": "h100"}),
		testutil.Container("cuda", "nvidia.com/gpumem-percentage", "50", "nvidia.com/gpucores", "20"))
	got, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.ResourceClaims) != 1 || got.Spec.ResourceClaims[0].ResourceClaimTemplateName == nil {
		t.Fatalf("seed-style pod not turned into a claim: %+v", got.Spec)
	}
	if _, err := c.WaitForPods(ctx, ns, "", 1, cluster.PodBound); err != nil {
		t.Fatal(err)
	}
	claim := claimOf(ctx, t, c, "seed")
	alloc := claim.Status.Allocation
	if alloc == nil || len(alloc.Devices.Results) != 1 {
		t.Fatalf("seed-style claim allocation %+v", alloc)
	}
	r := alloc.Devices.Results[0]
	mem, cores := r.ConsumedCapacity[dra.CapMemory], r.ConsumedCapacity[dra.CapCores]
	if r.Pool != "dra-node-1" && r.Pool != "dra-node-3" {
		t.Errorf("seed pod on %s: use-gputype h100 allows only the H100 nodes", r.Pool)
	}
	if mem.Value() != 40960<<20 || cores.Value() != 20 {
		t.Errorf("consumed memory %s cores %s: want 50%% of an 80 GiB H100 and 20", mem.String(), cores.String())
	}
}

// claimOf is the claim kube-controller-manager made for the pod's one
// template.
func claimOf(ctx context.Context, t *testing.T, c *cluster.Cluster, pod string) *resourcev1.ResourceClaim {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Status.ResourceClaimStatuses) != 1 || p.Status.ResourceClaimStatuses[0].ResourceClaimName == nil {
		t.Fatalf("pod %s: claim statuses %+v", pod, p.Status.ResourceClaimStatuses)
	}
	claim, err := c.Client.ResourceV1().ResourceClaims(ns).Get(ctx, *p.Status.ResourceClaimStatuses[0].ResourceClaimName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return claim
}

// draCluster is a control plane with the stock scheduler,
// kube-controller-manager's resourceclaim controller, vgpu's settings at
// split count `split`, and the dra overlay's DeviceClass.
func draCluster(ctx context.Context, t *testing.T, split int) *cluster.Cluster {
	t.Helper()
	c := cluster.Run(t, cluster.Options{Controllers: []string{"resourceclaim-controller"}})
	s := settings.Default()
	s.DeviceSplitCount = split
	if err := daemons.SetSettings(ctx, c, s); err != nil {
		t.Fatal(err)
	}
	createDeviceClass(ctx, t, c)
	return c
}

func createDeviceClass(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	t.Helper()
	// The overlay's own DeviceClass, so the test exercises what ships.
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "kustomize", "overlays", "dra", "deviceclass.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var dc resourcev1.DeviceClass
	if err := yaml.UnmarshalStrict(raw, &dc); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.ResourceV1().DeviceClasses().Create(ctx, &dc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// createTemplatePod creates the template the webhook would write (if no
// pod created it yet) and a pod that uses it; kube-controller-manager
// makes the claim.
func createTemplatePod(ctx context.Context, c *cluster.Cluster, name string, k request.Container, models []dra.Model) error {
	spec, err := dra.ClaimSpec(k, request.Selector{}, models)
	if err != nil {
		return err
	}
	tmpl := &resourcev1.ResourceClaimTemplate{ObjectMeta: metav1.ObjectMeta{Name: dra.TemplateName(spec), Namespace: ns},
		Spec: resourcev1.ResourceClaimTemplateSpec{Spec: spec}}
	if _, err := c.Client.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, tmpl, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("template for %s: %w", name, err)
	}
	pod := testutil.Pod(name, testutil.Namespace(ns), testutil.Labels(map[string]string{"app": "dra"}),
		testutil.Container("cuda"), testutil.Requests("cuda", "cpu", "10m"), testutil.ClaimTemplate("cuda", "gpu", tmpl.Name))
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("pod %s: %w", name, err)
	}
	return nil
}

// checkAllocations sums what the allocated claims consume per device: never
// more memory, cores or vGPU slots than the device has, a whole GPU alone on
// its device, gpu: N on N devices; and when a small pod is left pending, no
// device has a slot and that much memory free (first fit wastes no room a
// pending pod could use).
func checkAllocations(ctx context.Context, t *testing.T, c *cluster.Cluster, slices []*resourcev1.ResourceSlice,
	kindOf map[string]request.Container, smallPending bool, smallMiB int64) {
	t.Helper()
	capOf := map[string]map[resourcev1.QualifiedName]int64{}
	for _, s := range slices {
		for _, d := range s.Spec.Devices {
			m := map[resourcev1.QualifiedName]int64{}
			for n, cp := range d.Capacity {
				m[n] = cp.Value.Value()
			}
			capOf[s.Spec.Pool.Name+"/"+d.Name] = m
		}
	}
	claims, err := c.Client.ResourceV1().ResourceClaims(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]map[resourcev1.QualifiedName]int64{}
	holders := map[string][]string{}
	allocated := 0
	for _, cl := range claims.Items {
		if cl.Status.Allocation == nil {
			continue
		}
		allocated++
		// Every claim books capacity; the kinds are known for the flood's,
		// by the pod the claim was made for.
		pod := podOfClaim(&cl)
		if k, ok := kindOf[pod]; ok && len(cl.Status.Allocation.Devices.Results) != k.Count {
			t.Errorf("claim %s of pod %s got %d devices: want %d", cl.Name, pod, len(cl.Status.Allocation.Devices.Results), k.Count)
		}
		seen := map[string]bool{}
		for _, r := range cl.Status.Allocation.Devices.Results {
			key := r.Pool + "/" + r.Device
			if seen[key] {
				t.Errorf("claim %s got device %s twice: gpu: N must land on N GPUs", cl.Name, key)
			}
			seen[key] = true
			holders[key] = append(holders[key], pod)
			if used[key] == nil {
				used[key] = map[resourcev1.QualifiedName]int64{}
			}
			for n, q := range r.ConsumedCapacity {
				used[key][n] += q.Value()
			}
		}
	}
	if allocated == 0 {
		t.Fatal("no claim allocated")
	}
	slots := int64(0)
	for dev, u := range used {
		for n, v := range u {
			if v > capOf[dev][n] {
				t.Errorf("device %s: %s consumed %d of %d", dev, n, v, capOf[dev][n])
			}
		}
		slots += u[dra.CapVGPUs]
		for _, h := range holders[dev] {
			if kindOf[h].Exclusive && len(holders[dev]) > 1 {
				t.Errorf("device %s: whole-GPU pod %s shares it with %v", dev, h, holders[dev])
			}
		}
	}
	if smallPending {
		for dev, cp := range capOf {
			u := used[dev]
			if u[dra.CapVGPUs] < cp[dra.CapVGPUs] && cp[dra.CapMemory]-u[dra.CapMemory] >= smallMiB<<20 {
				t.Errorf("device %s has a free slot and %d MiB while a %d MiB pod is pending", dev, (cp[dra.CapMemory]-u[dra.CapMemory])>>20, smallMiB)
			}
		}
	}
	t.Logf("%d claims allocated, %d vGPU slots used of %d", allocated, slots, len(capOf)*split)
	// Where first fit put them (docs/dra.md#policies): slots used per GPU,
	// in device order, per node.
	for _, s := range slices {
		line := s.Spec.Pool.Name + ":"
		for _, d := range s.Spec.Devices {
			line += fmt.Sprintf(" %d", used[s.Spec.Pool.Name+"/"+d.Name][dra.CapVGPUs])
		}
		t.Log(line)
	}
}

// podOfClaim names the pod a claim was made for from its template.
func podOfClaim(cl *resourcev1.ResourceClaim) string {
	for _, o := range cl.OwnerReferences {
		if o.Kind == "Pod" {
			return o.Name
		}
	}
	return ""
}

// waitSlices waits until want slices of vgpu's driver list gpus devices
// each, and returns them.
func waitSlices(ctx context.Context, t *testing.T, c *cluster.Cluster, want, gpus int) []*resourcev1.ResourceSlice {
	t.Helper()
	for {
		list, err := c.Client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		if err == nil {
			var out []*resourcev1.ResourceSlice
			for i := range list.Items {
				if list.Items[i].Spec.Driver == dra.Driver && len(list.Items[i].Spec.Devices) == gpus {
					out = append(out, &list.Items[i])
				}
			}
			if len(out) == want {
				return out
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d node agents did not publish their slices: %v", want, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// One GPU, one booking: a node switched from the device plugin path to DRA
// and back offers its GPUs on one path at a time. In DRA mode the Node
// loses the inventory the extender places by and its nvidia.com/gpu
// capacity; back in device-plugin mode its ResourceSlice goes.
func TestSwitchingANodeBetweenPaths(t *testing.T) {
	c := cluster.Run(t, cluster.Options{NoScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n, err := gpunode.Node(gpunode.Spec{Prefix: "switch", GPUs: 2, NoInventory: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	delete(n.Status.Capacity, "nvidia.com/gpu")
	delete(n.Status.Allocatable, "nvidia.com/gpu")
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	nvml := gpunode.MockFlag(gpunode.A100_80GB, 2)
	type paths struct{ inventory, capacity, slice bool }
	state := func() paths {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, inv := node.Annotations["vgpu.io/devices"]
		q, capOK := node.Status.Allocatable["nvidia.com/gpu"]
		_, err = c.Client.ResourceV1().ResourceSlices().Get(ctx, n.Name+"-"+dra.Driver, metav1.GetOptions{})
		return paths{inventory: inv, capacity: capOK && !q.IsZero(), slice: err == nil}
	}
	waitState := func(what string, want paths) {
		t.Helper()
		var got paths
		for range 150 {
			if got = state(); got == want {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("%s: node offers %+v, want %+v", what, got, want)
	}
	for _, step := range []struct {
		mode string
		want paths
	}{
		{"device-plugin", paths{inventory: true, capacity: true}},
		{"dra", paths{slice: true}},
		{"device-plugin", paths{inventory: true, capacity: true}},
	} {
		if err := daemons.StartNodeAgent(ctx, c, n.Name, nvml, "--mode="+step.mode); err != nil {
			t.Fatal(err)
		}
		waitState("node agent in "+step.mode+" mode", step.want)
		c.StopProcess(daemons.NodeAgentName(n.Name))
	}
}
