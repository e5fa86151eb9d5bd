// Package booking says who holds what on a node's GPUs, read from either
// scheduling path's record (docs/dra.md): the vgpu.io/assignment annotation
// of the extender path, or the allocated ResourceClaims of the DRA path.
// Both give the same list, so vgpuctl and the monitor count one way.
package booking

import (
	"cmp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/dra"
)

// Booking is one holder of GPU shares on a node.
type Booking struct {
	Namespace string
	// Pod holds the shares; on the DRA path the first pod the claim is
	// reserved for, "" while it is reserved for none.
	Pod    string
	PodUID types.UID
	// Claim is the ResourceClaim (DRA path); "" on the extender path.
	Claim string
	// Assignment lists the shares per container, with their limits; on the
	// DRA path one entry per request of the claim, named after the
	// containers that use it.
	Assignment assign.Pod
	// heldMiB is, per container and device of Assignment, the memory the
	// DRA allocator booked where it differs from the limit (0: the same).
	heldMiB [][]int64
}

// Held is Assignment as the scheduler counts it: on the DRA path a share
// whose claim names no memory holds the GPU's whole scaled memory though
// it is limited to the real memory (docs/dra.md).
func (b Booking) Held() assign.Pod {
	if b.heldMiB == nil {
		return b.Assignment
	}
	out := b.Assignment
	out.Containers = slices.Clone(out.Containers)
	for i := range out.Containers {
		out.Containers[i].Devices = slices.Clone(out.Containers[i].Devices)
		for j := range out.Containers[i].Devices {
			if i < len(b.heldMiB) && b.heldMiB[i] != nil && b.heldMiB[i][j] > 0 {
				m := b.heldMiB[i][j]
				out.Containers[i].Devices[j].MemoryMiB = m
			}
		}
	}
	return out
}

// Key names the booking uniquely on its node.
func (b Booking) Key() string {
	if b.Claim != "" {
		return b.Namespace + "/claim/" + b.Claim
	}
	return b.Namespace + "/" + b.Pod
}

func active(p *corev1.Pod) bool {
	return p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

func sortBookings(out []Booking) {
	slices.SortFunc(out, func(a, b Booking) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Pod, b.Pod), strings.Compare(a.Claim, b.Claim))
	})
}

// FromPods reads the extender path's bookings: the assignments of the pods
// bound to node that have not finished. A pod whose annotation does not
// decode is a warning, not a booking.
func FromPods(node string, pods []corev1.Pod) (out []Booking, warnings []string) {
	for i := range pods {
		p := &pods[i]
		_, ok := p.Annotations[contract.AnnotationAssignment]
		if !ok || !active(p) {
			continue
		}
		a, err := annotation.DecodePodAssignment(p)
		if err != nil {
			warnings = append(warnings, "pod "+p.Namespace+"/"+p.Name+": "+err.Error())
			continue
		}
		if a.Node != node {
			continue
		}
		out = append(out, Booking{Namespace: p.Namespace, Pod: p.Name, PodUID: p.UID, Assignment: a})
	}
	sortBookings(out)
	return out, warnings
}

// FromClaims reads the DRA path's bookings: every claim allocated devices
// of vgpu's driver in node's pool, with the consumed capacity as the share
// (dra.Shares). An allocated claim books its shares whether or not a pod
// uses it yet, as kube-scheduler counts it. slices name the GPUs; pods (of
// any node) name who holds each claim.
func FromClaims(node string, rs []*resourcev1.ResourceSlice, claims []*resourcev1.ResourceClaim, pods []corev1.Pod) (out []Booking, warnings []string) {
	gpus := map[string]dra.GPU{}
	for _, s := range rs {
		if s.Spec.Driver != dra.Driver || s.Spec.Pool.Name != node {
			continue
		}
		for _, d := range s.Spec.Devices {
			g := dra.GPU{}
			if a := d.Attributes[dra.AttrUUID].StringValue; a != nil {
				g.UUID = *a
			}
			if a := d.Attributes[dra.AttrMemoryMiB].IntValue; a != nil {
				g.MemoryMiB = *a
			}
			if g.UUID != "" {
				gpus[d.Name] = g
			}
		}
	}
	byUID := map[types.UID]*corev1.Pod{}
	for i := range pods {
		byUID[pods[i].UID] = &pods[i]
	}
	var order []int
	for _, c := range claims {
		if c.Status.Allocation == nil || !slices.ContainsFunc(c.Status.Allocation.Devices.Results, func(r resourcev1.DeviceRequestAllocationResult) bool {
			return r.Driver == dra.Driver && r.Pool == node
		}) {
			continue
		}
		shares, err := dra.Shares(c, func(pool, device string) (dra.GPU, bool) {
			g, ok := gpus[device]
			return g, ok && pool == node
		})
		if err != nil {
			warnings = append(warnings, err.Error())
			continue
		}
		b := Booking{Namespace: c.Namespace, Claim: c.Name, Assignment: assign.Pod{Node: node}}
		// The first reserved pod this list knows holds it; else the first
		// reserved pod by name.
		var holder *corev1.Pod
		for _, r := range c.Status.ReservedFor {
			if r.Resource != "pods" || r.APIGroup != "" {
				continue
			}
			if b.Pod == "" {
				b.Pod, b.PodUID = r.Name, r.UID
			}
			if p := byUID[r.UID]; p != nil {
				holder = p
				b.Pod, b.PodUID = p.Name, p.UID
				break
			}
		}
		pos := 0
		for i, s := range shares {
			name, init, sidecar, at := containersOf(holder, c.Name, s.Request)
			if i == 0 {
				pos = at
			}
			b.Assignment.Containers = append(b.Assignment.Containers, assign.Container{Name: name, Init: init, Sidecar: sidecar, Devices: s.Devices})
			for j, r := range s.Results {
				if q, ok := r.ConsumedCapacity[dra.CapMemory]; ok && q.Value()>>20 != s.Devices[j].MemoryMiB {
					for len(b.heldMiB) <= i {
						b.heldMiB = append(b.heldMiB, nil)
					}
					if b.heldMiB[i] == nil {
						b.heldMiB[i] = make([]int64, len(s.Devices))
					}
					b.heldMiB[i][j] = q.Value() >> 20
				}
			}
		}
		out = append(out, b)
		order = append(order, pos)
	}
	// A pod's claims in the order of its containers, as its assignment
	// lists them on the extender path.
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(i, j int) int {
		a, b := out[i], out[j]
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Pod, b.Pod), cmp.Compare(order[i], order[j]), strings.Compare(a.Claim, b.Claim))
	})
	sorted := make([]Booking, len(out))
	for k, i := range idx {
		sorted[k] = out[i]
	}
	return sorted, warnings
}

// containersOf names the containers of p that use request of claim,
// comma separated; the request's name when p is unknown or none does.
// init is true when only init containers use it, sidecar when these are
// all sidecars (restartable init containers, which run beside the app);
// at is the first one's place in the pod, init containers first.
func containersOf(p *corev1.Pod, claim, request string) (name string, init, sidecar bool, at int) {
	names, init, sidecar, at := using(p, claim, request)
	if len(names) == 0 {
		return request, false, false, 0
	}
	return strings.Join(names, ","), init, sidecar, at
}

// ContainersUsing names the containers of p, init containers first, that
// use request of the claim named claim (directly or made from one of p's
// templates); none when p is nil or none does.
func ContainersUsing(p *corev1.Pod, claim, request string) []string {
	names, _, _, _ := using(p, claim, request)
	return names
}

func using(p *corev1.Pod, claim, request string) (names []string, init, sidecar bool, at int) {
	if p == nil {
		return nil, false, false, 0
	}
	// The pod's own name for the claim: direct, or from a template.
	var podClaims []string
	for _, pc := range p.Spec.ResourceClaims {
		if pc.ResourceClaimName != nil && *pc.ResourceClaimName == claim {
			podClaims = append(podClaims, pc.Name)
		}
	}
	for _, st := range p.Status.ResourceClaimStatuses {
		if st.ResourceClaimName != nil && *st.ResourceClaimName == claim {
			podClaims = append(podClaims, st.Name)
		}
	}
	uses := func(c corev1.Container) bool {
		return slices.ContainsFunc(c.Resources.Claims, func(rc corev1.ResourceClaim) bool {
			return slices.Contains(podClaims, rc.Name) && (rc.Request == "" || rc.Request == request)
		})
	}
	at = -1
	sidecar = true
	for i, c := range p.Spec.InitContainers {
		if uses(c) {
			sidecar = sidecar && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
			names = append(names, c.Name)
			if at < 0 {
				at = i
			}
		}
	}
	init = len(names) > 0
	sidecar = sidecar && init
	for i, c := range p.Spec.Containers {
		if uses(c) {
			if at < 0 {
				at = len(p.Spec.InitContainers) + i
			}
			names = append(names, c.Name)
			init, sidecar = false, false
		}
	}
	return names, init, sidecar, at
}
