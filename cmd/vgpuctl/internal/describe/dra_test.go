package describe

import (
	"encoding/json"
	"fmt"
	"slices"
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
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// onDRA rewrites a cluster as the DRA path records it: each GPU node's
// inventory becomes its ResourceSlice, each running pod's assignment one
// allocated claim per container (as the webhook writes them), reserved for
// the pod. A finished pod's claims are gone (kube-controller-manager frees
// them), so it has none.
func onDRA(t *testing.T, objs []runtime.Object) []runtime.Object {
	t.Helper()
	var out []runtime.Object
	for _, o := range objs {
		switch o := o.DeepCopyObject().(type) {
		case *corev1.Node:
			if v, ok := o.Annotations[contract.AnnotationDevices]; ok {
				inv, err := annotation.DecodeDevices(v)
				if err != nil {
					t.Fatal(err)
				}
				s := settings.Default()
				s.DeviceSplitCount, s.DeviceMemoryScaling = inv.SplitCount, inv.MemoryScaling
				devs, err := dra.Devices(inv.GPUs, s)
				if err != nil {
					t.Fatal(err)
				}
				delete(o.Annotations, contract.AnnotationDevices)
				out = append(out, &resourcev1.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: o.Name + "-gpu.vgpu.io"},
					Spec: resourcev1.ResourceSliceSpec{Driver: dra.Driver, NodeName: &o.Name, Pool: resourcev1.ResourcePool{Name: o.Name, ResourceSliceCount: 1}, Devices: devs}})
				// The slice names devices by index; look them up by uuid.
				for _, g := range inv.GPUs {
					deviceOf[g.UUID] = dra.DeviceName(g.Index)
				}
			}
			out = append(out, o)
		case *corev1.Pod:
			v, ok := o.Annotations[contract.AnnotationAssignment]
			if !ok {
				out = append(out, o)
				continue
			}
			a, err := annotation.DecodeAssignment(v)
			if err != nil {
				t.Fatal(err)
			}
			delete(o.Annotations, contract.AnnotationAssignment)
			for _, c := range a.Containers {
				podClaim := "vgpu-" + c.Name
				claimName := o.Name + "-" + podClaim
				spec := &o.Spec.Containers
				if c.Init {
					spec = &o.Spec.InitContainers
				}
				*spec = append(*spec, corev1.Container{Name: c.Name, Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: podClaim}}}})
				o.Spec.ResourceClaims = append(o.Spec.ResourceClaims, corev1.PodResourceClaim{Name: podClaim, ResourceClaimTemplateName: ptr("t")})
				o.Status.ResourceClaimStatuses = append(o.Status.ResourceClaimStatuses, corev1.PodResourceClaimStatus{Name: podClaim, ResourceClaimName: &claimName})
				if o.Status.Phase == corev1.PodSucceeded || o.Status.Phase == corev1.PodFailed {
					continue
				}
				claim := &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: claimName, UID: types.UID("claim-" + claimName)}}
				claim.Status.Allocation = &resourcev1.AllocationResult{}
				for _, d := range c.Devices {
					claim.Status.Allocation.Devices.Results = append(claim.Status.Allocation.Devices.Results, resourcev1.DeviceRequestAllocationResult{
						Request: dra.RequestName, Driver: dra.Driver, Pool: a.Node, Device: deviceOf[d.UUID],
						ConsumedCapacity: map[resourcev1.QualifiedName]resource.Quantity{
							dra.CapMemory: dra.MiB(d.MemoryMiB), dra.CapCores: *resource.NewQuantity(int64(d.Cores), resource.DecimalSI)}})
				}
				claim.Status.ReservedFor = []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: o.Name, UID: o.UID}}
				out = append(out, claim)
			}
			out = append(out, o)
		default:
			out = append(out, o)
		}
	}
	return out
}

var deviceOf = map[string]string{}

func ptr[T any](v T) *T { return &v }

// withoutInit drops init containers from the pods' assignments: the two
// paths book them differently (TestDescribeDRABooksInitContainersWhole).
func withoutInit(t *testing.T, objs []runtime.Object) []runtime.Object {
	var out []runtime.Object
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && p.Annotations[contract.AnnotationAssignment] != "" {
			p = p.DeepCopy()
			a, err := annotation.DecodeAssignment(p.Annotations[contract.AnnotationAssignment])
			if err != nil {
				t.Fatal(err)
			}
			a.Containers = slices.DeleteFunc(a.Containers, func(c assign.Container) bool { return c.Init })
			if p.Annotations[contract.AnnotationAssignment], err = annotation.EncodeAssignment(a); err != nil {
				t.Fatal(err)
			}
			o = p
		}
		out = append(out, o)
	}
	return out
}

// A cluster on the DRA path reports exactly what the same cluster reports
// on the extender path: the same GPUs, shares, totals and free space.
func TestDescribeDRAMatchesExtender(t *testing.T) {
	ext := withoutInit(t, cluster(t))
	onDra := onDRA(t, ext)
	for _, args := range [][]string{{"gpu-node-1"}, {"gpu-node-2"}, nil, {"-o", "json"}, {"gpu-node-1", "-o", "json"}} {
		t.Run(strings.Join(append([]string{"node"}, args...), " "), func(t *testing.T) {
			want, _, err := run(t, ext, args...)
			if err != nil {
				t.Fatal(err)
			}
			got, errOut, err := run(t, onDra, args...)
			if err != nil || errOut != "" {
				t.Fatalf("err %v, stderr %q", err, errOut)
			}
			if len(args) > 1 && args[0] == "gpu-node-1" {
				// The JSON says which record it read, and which claim holds each share.
				if !strings.Contains(got, `"path": "dra"`) || !strings.Contains(got, `"claim": "train-0-vgpu-trainer"`) {
					t.Fatalf("DRA report does not name its path and claims:\n%s", got)
				}
				got = strings.NewReplacer(`"path": "dra"`, `"path": "extender"`).Replace(got)
				got = dropClaims(got)
			}
			if got != want {
				t.Errorf("DRA path reports\n%s\nextender path reports\n%s", got, want)
			}
		})
	}
}

func dropClaims(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, `"claim": `) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A claim naming a device the slice does not list is a warning in the
// report, not a silent omission.
func TestDescribeDRAWarnsOfUnreadableClaims(t *testing.T) {
	objs := onDRA(t, cluster(t))
	for _, o := range objs {
		if c, ok := o.(*resourcev1.ResourceClaim); ok && c.Name == "notebook-vgpu-jupyter" {
			c.Status.Allocation.Devices.Results[0].Device = "gpu-9"
		}
	}
	out, _, err := run(t, objs, "gpu-node-1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "team-c/notebook-vgpu-jupyter") || !strings.Contains(out, "gpu-9") {
		t.Errorf("no warning naming the claim and device:\n%s", out)
	}
	if strings.Contains(out, "jupyter\t") {
		t.Errorf("the unreadable claim is still shown as a share:\n%s", out)
	}
}

// An init container's claim is held for the pod's lifetime, so the DRA
// path books it beside the app containers, where the extender path books
// the largest init container in their place (docs/dra.md); the report
// shows what kube-scheduler counts.
func TestDescribeDRABooksInitContainersWhole(t *testing.T) {
	out, _, err := run(t, onDRA(t, cluster(t)), "gpu-node-1", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var r NodeReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	g := r.GPUs[1]
	var names []string
	for _, p := range g.Pods {
		names = append(names, fmt.Sprintf("%s init=%v", p.Container, p.Init))
	}
	want := []string{"fetch-weights init=true", "server init=false", "metrics init=false"}
	if g.MemoryAllocatedMiB != 20480+10240+1024 || g.SlotsUsed != 3 || !slices.Equal(names, want) {
		t.Errorf("GPU 1: %d MiB, %d slots, shares %v; want 31744 MiB, 3 slots, %v", g.MemoryAllocatedMiB, g.SlotsUsed, names, want)
	}
}
