package pods

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/settings"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

func TestNodeView(t *testing.T) {
	bound := testutil.Assigned(assign.Pod{Node: "n1", Containers: []assign.Container{{Name: "c", Devices: []assign.Device{{UUID: "GPU-1", MemoryMiB: 100}}}}})
	n1 := testutil.Node("n1")
	inv, _ := annotation.EncodeDevices(device.Inventory{SplitCount: 4, MemoryScaling: 1, GPUs: []device.GPU{{UUID: "GPU-1", MemoryMiB: 1000, Healthy: true}}})
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: map[string]string{contract.AnnotationDevices: inv}}},
		testutil.Pod("running", testutil.Phase(corev1.PodRunning), bound),
		testutil.Pod("pending", testutil.Phase(corev1.PodPending), bound),
		testutil.Pod("done", testutil.Phase(corev1.PodSucceeded), bound),
		testutil.Pod("failed", testutil.Phase(corev1.PodFailed), bound),
		testutil.Pod("plain", n1, testutil.Phase(corev1.PodRunning)),
		testutil.Pod("broken", n1, testutil.Phase(corev1.PodRunning), testutil.Annotations(map[string]string{contract.AnnotationAssignment: `{"version":"v1","node":""}`})),
	)
	core, logs := observer.New(zap.WarnLevel)
	n := New(client, "n1", zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := n.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !n.Synced() {
		t.Fatal("not synced after Run")
	}
	if ref, ok := n.Lookup("uid-plain"); !ok || ref.Name != "plain" || ref.Namespace != "ns" {
		t.Fatalf("Lookup(uid-plain) = %+v, %v", ref, ok)
	}
	if _, ok := n.Lookup("uid-nope"); ok {
		t.Fatal("found a pod that does not exist")
	}
	for i := 0; i < 3; i++ {
		as := n.Assignments()
		if len(as) != 2 || as[0].Name != "pending" || as[1].Name != "running" {
			t.Fatalf("Assignments = %+v, want the pending and running pods only", as)
		}
	}
	if logs.Len() != 1 {
		t.Fatalf("3 reads logged the broken assignment %d times, want once", logs.Len())
	}
	if got, ok := n.Inventory(); !ok || got.SplitCount != 4 {
		t.Fatalf("Inventory = %+v, %v", got, ok)
	}
}

func allocated(name, node string, device string, memMiB int64, reservedFor *corev1.Pod) *resourcev1.ResourceClaim {
	c := &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("claim-" + name)}}
	c.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{{
		Request: "gpu", Driver: dra.Driver, Pool: node, Device: device,
		ConsumedCapacity: map[resourcev1.QualifiedName]resource.Quantity{dra.CapMemory: dra.MiB(memMiB), dra.CapCores: *resource.NewQuantity(20, resource.DecimalSI)}}}}}
	if reservedFor != nil {
		c.Status.ReservedFor = []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: reservedFor.Name, UID: reservedFor.UID}}
	}
	return c
}

// On the DRA path the node's GPUs come from its ResourceSlice and what is
// assigned from the claims allocated on it, with the capacity they consumed.
func TestNodeViewFromClaims(t *testing.T) {
	s := settings.Default()
	s.DeviceSplitCount = 6
	devs, err := dra.Devices([]device.GPU{{UUID: "GPU-1", Index: 0, Model: "A100", MemoryMiB: 1000, Healthy: true}}, s)
	if err != nil {
		t.Fatal(err)
	}
	// main and side use the claim "mine", made from a template; side names
	// the request it uses, plain uses none.
	running := testutil.Pod("running", testutil.Node("n1"), testutil.Phase(corev1.PodRunning),
		testutil.Container("main"), testutil.Container("side"), testutil.Container("plain"),
		testutil.ClaimTemplate("main", "shares", "t"))
	running.Spec.Containers[1].Resources.Claims = []corev1.ResourceClaim{{Name: "shares", Request: "gpu"}}
	running.Status.ResourceClaimStatuses = []corev1.PodResourceClaimStatus{{Name: "shares", ResourceClaimName: ptr("mine")}}
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}},
		&resourcev1.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: "n1-gpu"},
			Spec: resourcev1.ResourceSliceSpec{Driver: dra.Driver, NodeName: ptr("n1"), Pool: resourcev1.ResourcePool{Name: "n1"}, Devices: devs}},
		running,
		allocated("mine", "n1", "gpu-0", 300, running),
		allocated("unused", "n1", "gpu-0", 200, nil),
		allocated("elsewhere", "n2", "gpu-0", 900, nil),
		allocated("broken", "n1", "gpu-5", 1, running),
		&resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pending"}},
	)
	core, logs := observer.New(zap.WarnLevel)
	n := New(client, "n1", zap.New(core), FromClaims())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := n.Run(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		as := n.Assignments()
		if len(as) != 2 || as[0].Name != "" || as[1].Name != "running" || as[1].UID != running.UID {
			t.Fatalf("Assignments = %+v, want the unused claim and the running pod's", as)
		}
		if d := as[1].Assignment.Containers[0].Devices; len(d) != 1 || d[0] != (assign.Device{UUID: "GPU-1", MemoryMiB: 300, Cores: 20}) {
			t.Fatalf("running pod's share %+v", d)
		}
	}
	if logs.Len() != 1 {
		t.Fatalf("3 reads logged the broken claim %d times, want once", logs.Len())
	}
	if got, ok := n.Inventory(); !ok || got.SplitCount != 6 || len(got.GPUs) != 1 || got.GPUs[0].UUID != "GPU-1" {
		t.Fatalf("Inventory = %+v, %v", got, ok)
	}
	// The audit sees each container that uses the claim with the claim's
	// limits, and the claim's region as theirs.
	ps := n.Pods()
	if len(ps) != 1 || ps[0].Assignment == nil {
		t.Fatalf("Pods = %+v, want the running pod with its claim's shares", ps)
	}
	var names []string
	for _, c := range ps[0].Assignment.Containers {
		names = append(names, c.Name)
		if len(c.Devices) != 1 || c.Devices[0] != (assign.Device{UUID: "GPU-1", MemoryMiB: 300, Cores: 20}) {
			t.Errorf("container %s runs under %+v", c.Name, c.Devices)
		}
	}
	if strings.Join(names, ",") != "main,side" {
		t.Errorf("containers under the claim: %v, want main and side", names)
	}
	if hs := n.ClaimUsers("claim-mine", "gpu"); len(hs) != 1 || hs[0].PodUID != string(running.UID) || strings.Join(hs[0].Containers, ",") != "main,side" {
		t.Errorf("ClaimUsers(claim-mine, gpu) = %+v, want the running pod's main and side", hs)
	}
	// side names the request it uses; main uses the whole claim.
	if hs := n.ClaimUsers("claim-mine", "other"); len(hs) != 1 || strings.Join(hs[0].Containers, ",") != "main" {
		t.Errorf("ClaimUsers(claim-mine, other) = %+v; want main alone", hs)
	}
	if hs := n.ClaimUsers("claim-unused", "gpu"); len(hs) != 0 {
		t.Errorf("a claim no pod holds has users: %+v", hs)
	}
}

func ptr[T any](v T) *T { return &v }
