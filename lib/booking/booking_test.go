package booking

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/settings"
)

const node = "n1"

var gpus = []device.GPU{
	{Index: 0, UUID: "GPU-0", Model: "A100", MemoryMiB: 40960, NUMANode: 0, Healthy: true},
	{Index: 1, UUID: "GPU-1", Model: "A100", MemoryMiB: 40960, NUMANode: 1, Healthy: false},
}

func nodeSlice(t *testing.T, pool string, s settings.Settings) *resourcev1.ResourceSlice {
	t.Helper()
	devs, err := dra.Devices(gpus, s)
	if err != nil {
		t.Fatal(err)
	}
	return &resourcev1.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: pool + "-slice"},
		Spec: resourcev1.ResourceSliceSpec{Driver: dra.Driver, Pool: resourcev1.ResourcePool{Name: pool}, NodeName: ptr(pool), Devices: devs}}
}

func ptr[T any](v T) *T { return &v }

// share is one device of a request: what both records say.
type share struct {
	request string
	gpu     int
	mem     int64
	cores   int64
}

// podWith is a pod as the extender path records it.
func podWith(t *testing.T, name string, phase corev1.PodPhase, containers map[string][]share) corev1.Pod {
	t.Helper()
	a := assign.Pod{Node: node}
	for _, c := range []string{"main", "side"} {
		for _, s := range containers[c] {
			if i := len(a.Containers) - 1; i < 0 || a.Containers[i].Name != c {
				a.Containers = append(a.Containers, assign.Container{Name: c})
			}
			i := len(a.Containers) - 1
			a.Containers[i].Devices = append(a.Containers[i].Devices, assign.Device{UUID: gpus[s.gpu].UUID, MemoryMiB: s.mem, Cores: int(s.cores)})
		}
	}
	v, err := annotation.EncodeAssignment(a)
	if err != nil {
		t.Fatal(err)
	}
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name),
		Annotations: map[string]string{"vgpu.io/assignment": v}}, Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: phase}}
}

// claimFor is the same shares as the DRA path records them: one claim per
// container (as the webhook writes them), reserved for the pod.
func claimFor(pod *corev1.Pod, container, pool string, shares []share) *resourcev1.ResourceClaim {
	c := &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name + "-vgpu-" + container, UID: types.UID("claim-" + pod.Name + container)}}
	c.Status.Allocation = &resourcev1.AllocationResult{}
	for _, s := range shares {
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results, resourcev1.DeviceRequestAllocationResult{
			Request: s.request, Driver: dra.Driver, Pool: pool, Device: dra.DeviceName(s.gpu),
			ConsumedCapacity: map[resourcev1.QualifiedName]resource.Quantity{
				dra.CapMemory: dra.MiB(s.mem), dra.CapCores: *resource.NewQuantity(s.cores, resource.DecimalSI)}})
	}
	c.Status.ReservedFor = []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: pod.Name, UID: pod.UID}}
	pod.Spec.ResourceClaims = append(pod.Spec.ResourceClaims, corev1.PodResourceClaim{Name: "vgpu-" + container, ResourceClaimTemplateName: ptr("t")})
	pod.Status.ResourceClaimStatuses = append(pod.Status.ResourceClaimStatuses, corev1.PodResourceClaimStatus{Name: "vgpu-" + container, ResourceClaimName: ptr(c.Name)})
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: container,
		Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "vgpu-" + container}}}})
	return c
}

// The same shares recorded on either path give the same bookings.
func TestBothPathsGiveTheSameShares(t *testing.T) {
	cases := []struct {
		name string
		pods map[string]map[string][]share
	}{
		{"one share", map[string]map[string][]share{"a": {"main": {{"gpu", 0, 10240, 30}}}}},
		{"two GPUs in one container", map[string]map[string][]share{"a": {"main": {{"gpu", 0, 4000, 0}, {"gpu", 1, 4000, 0}}}}},
		{"two containers, two pods", map[string]map[string][]share{
			"a": {"main": {{"gpu", 0, 1000, 10}}, "side": {{"gpu", 0, 2000, 20}}},
			"b": {"main": {{"gpu/model-0", 1, 40960, 100}}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var annotated, claimPods []corev1.Pod
			var claims []*resourcev1.ResourceClaim
			for name, containers := range tc.pods {
				annotated = append(annotated, podWith(t, name, corev1.PodRunning, containers))
				p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)}}
				for _, c := range []string{"main", "side"} {
					if s, ok := containers[c]; ok {
						claims = append(claims, claimFor(&p, c, node, s))
					}
				}
				claimPods = append(claimPods, p)
			}
			fromPods, w1 := FromPods(node, annotated)
			fromClaims, w2 := FromClaims(node, []*resourcev1.ResourceSlice{nodeSlice(t, node, settings.Default())}, claims, claimPods)
			if len(w1)+len(w2) > 0 {
				t.Fatalf("warnings %v %v", w1, w2)
			}
			if got, want := perGPU(fromClaims), perGPU(fromPods); !reflect.DeepEqual(got, want) || len(want) == 0 {
				t.Errorf("claims give\n%v\nannotations give\n%v", got, want)
			}
		})
	}
}

// perGPU is the per-GPU share list a report shows: pod, container, limits.
func perGPU(bs []Booking) map[string][]string {
	out := map[string][]string{}
	for _, b := range bs {
		for _, c := range b.Assignment.Containers {
			for _, d := range c.Devices {
				out[d.UUID] = append(out[d.UUID], fmt.Sprintf("%s/%s %s init=%v %dMiB %d%%", b.Namespace, b.Pod, c.Name, c.Init, d.MemoryMiB, d.Cores))
			}
		}
	}
	return out
}

func TestFromClaimsEdges(t *testing.T) {
	slices := []*resourcev1.ResourceSlice{nodeSlice(t, node, settings.Default()), nodeSlice(t, "other", settings.Default())}
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "uid-p"}}
	elsewhere := claimFor(&pod, "main", "other", []share{{"gpu", 0, 100, 0}})
	unallocated := &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pending"}}
	unknownDevice := claimFor(&pod, "main", node, []share{{"gpu", 7, 100, 0}})
	unknownDevice.Name = "bad"
	// Reserved for a pod the list does not hold: named from the claim.
	orphan := claimFor(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "gone", UID: "uid-gone"}}, "main", node, []share{{"gpu", 0, 500, 5}})
	// A whole GPU whose memory limit is in the opaque config.
	whole := claimFor(&pod, "side", node, []share{{"gpu", 0, 40960, 100}})
	whole.Status.Allocation.Devices.Config = []resourcev1.DeviceAllocationConfiguration{{Requests: []string{"gpu"},
		DeviceConfiguration: resourcev1.DeviceConfiguration{Opaque: &resourcev1.OpaqueDeviceConfiguration{Driver: dra.Driver,
			Parameters: runtime.RawExtension{Raw: []byte(`{"apiVersion":"gpu.vgpu.io/v1alpha1","kind":"ShareConfig","memoryPercent":50}`)}}}}}
	// Used by an init container only.
	pod.Spec.InitContainers = []corev1.Container{{Name: "warm", Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "vgpu-init"}}}}}
	initClaim := claimFor(&pod, "init", node, []share{{"gpu", 1, 100, 0}})
	pod.Spec.Containers = pod.Spec.Containers[:len(pod.Spec.Containers)-1]
	// Used by a sidecar (a restartable init container) only.
	always := corev1.ContainerRestartPolicyAlways
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: "proxy", RestartPolicy: &always,
		Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "vgpu-proxy"}}}})
	sidecarClaim := claimFor(&pod, "proxy", node, []share{{"gpu", 1, 200, 0}})
	pod.Spec.Containers = pod.Spec.Containers[:len(pod.Spec.Containers)-1]

	got, warnings := FromClaims(node, slices, []*resourcev1.ResourceClaim{elsewhere, unallocated, unknownDevice, orphan, whole, initClaim, sidecarClaim}, []corev1.Pod{pod})
	if len(warnings) != 1 || !strings.Contains(warnings[0], "ns/bad") || !strings.Contains(warnings[0], "gpu-7") {
		t.Errorf("warnings %v: want one naming claim ns/bad and device gpu-7", warnings)
	}
	want := []Booking{
		{Namespace: "ns", Pod: "gone", PodUID: "uid-gone", Claim: orphan.Name, Assignment: assign.Pod{Node: node, Containers: []assign.Container{
			{Name: "gpu", Devices: []assign.Device{{UUID: "GPU-0", MemoryMiB: 500, Cores: 5}}}}}},
		{Namespace: "ns", Pod: "p", PodUID: "uid-p", Claim: initClaim.Name, Assignment: assign.Pod{Node: node, Containers: []assign.Container{
			{Name: "warm", Init: true, Devices: []assign.Device{{UUID: "GPU-1", MemoryMiB: 100}}}}}},
		{Namespace: "ns", Pod: "p", PodUID: "uid-p", Claim: sidecarClaim.Name, Assignment: assign.Pod{Node: node, Containers: []assign.Container{
			{Name: "proxy", Init: true, Sidecar: true, Devices: []assign.Device{{UUID: "GPU-1", MemoryMiB: 200}}}}}},
		{Namespace: "ns", Pod: "p", PodUID: "uid-p", Claim: whole.Name, Assignment: assign.Pod{Node: node, Containers: []assign.Container{
			{Name: "side", Devices: []assign.Device{{UUID: "GPU-0", MemoryMiB: 20480, Cores: 100}}}}},
			// The whole GPU is held, whatever its limit.
			heldMiB: [][]int64{{40960}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
}

// A finished pod and an assignment for another node book nothing; a bad
// annotation is a warning.
func TestFromPodsSkipsWhatHoldsNothing(t *testing.T) {
	done := podWith(t, "done", corev1.PodSucceeded, map[string][]share{"main": {{"gpu", 0, 1, 0}}})
	bad := podWith(t, "bad", corev1.PodRunning, nil)
	bad.Annotations["vgpu.io/assignment"] = "{"
	ok := podWith(t, "ok", corev1.PodPending, map[string][]share{"main": {{"gpu", 1, 5, 0}}})
	got, warnings := FromPods(node, []corev1.Pod{done, bad, ok})
	if len(got) != 1 || got[0].Pod != "ok" || len(warnings) != 1 || !strings.Contains(warnings[0], "ns/bad") {
		t.Errorf("got %+v, warnings %v", got, warnings)
	}
}

func TestInventoryFromSlices(t *testing.T) {
	s := settings.Default()
	s.DeviceSplitCount = 7
	s.DeviceMemoryScaling = 1.5
	inv, ok := dra.Inventory(node, []*resourcev1.ResourceSlice{nodeSlice(t, node, s), nodeSlice(t, "other", settings.Default())})
	want := device.Inventory{GPUs: gpus, SplitCount: 7, MemoryScaling: 1.5}
	if !ok || !reflect.DeepEqual(inv, want) {
		t.Errorf("inventory %+v, want %+v", inv, want)
	}
	if _, ok := dra.Inventory("nobody", []*resourcev1.ResourceSlice{nodeSlice(t, node, s)}); ok {
		t.Error("a node without a slice has an inventory")
	}
}

// TestHeldIsWhatTheAllocatorCounts: with memory scaling 1.5, a share whose
// claim names no memory is limited to the GPU's 40960 MiB but holds the
// whole 61440 MiB the allocator booked; Held says so, the assignment keeps
// the limit.
func TestHeldIsWhatTheAllocatorCounts(t *testing.T) {
	pod := podWith(t, "a", corev1.PodRunning, nil)
	c := claimFor(&pod, "main", node, []share{{dra.RequestName, 0, 61440, 30}})
	c.Spec.Devices.Requests = []resourcev1.DeviceRequest{{Name: dra.RequestName, Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: dra.DeviceClass,
		Capacity: &resourcev1.CapacityRequirements{Requests: map[resourcev1.QualifiedName]resource.Quantity{dra.CapCores: *resource.NewQuantity(30, resource.DecimalSI)}}}}}
	s := settings.Default()
	s.DeviceMemoryScaling = 1.5
	bs, warnings := FromClaims(node, []*resourcev1.ResourceSlice{nodeSlice(t, node, s)}, []*resourcev1.ResourceClaim{c}, []corev1.Pod{pod})
	if len(bs) != 1 || len(warnings) != 0 {
		t.Fatalf("bookings %+v, warnings %v", bs, warnings)
	}
	if got := bs[0].Assignment.Containers[0].Devices[0].MemoryMiB; got != 40960 {
		t.Errorf("limit %d MiB, want the GPU's 40960", got)
	}
	if got := bs[0].Held().Containers[0].Devices[0].MemoryMiB; got != 61440 {
		t.Errorf("held %d MiB, want the 61440 the allocator booked", got)
	}
	if got := bs[0].Assignment.Containers[0].Devices[0].MemoryMiB; got != 40960 {
		t.Errorf("Held changed the assignment's limit to %d MiB", got)
	}
}
