package describe

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/vgpu-io/vgpu/lib/booking"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/ledger"
)

// NodeReport is `describe node NAME` as data (-o json|yaml).
type NodeReport struct {
	Name          string      `json:"name"`
	SplitCount    int         `json:"splitCount"`
	MemoryScaling float64     `json:"memoryScaling"`
	GPUs          []GPUReport `json:"gpus"`
	LargestFree   *Free       `json:"largestFree"`
	// Usage says whether actual usage from the node's monitor is shown.
	Usage *UsageStatus `json:"usage,omitempty"`
	// Path is the scheduling path whose record the shares come from:
	// "extender" (vgpu.io/assignment) or "dra" (allocated ResourceClaims).
	Path string `json:"path"`
	// Warnings lists pods or claims whose shares could not be read.
	Warnings []string `json:"warnings,omitempty"`
}

// GPUReport is one GPU with what is allocated on it.
type GPUReport struct {
	Index   int    `json:"index"`
	Model   string `json:"model"`
	UUID    string `json:"uuid"`
	Healthy bool   `json:"healthy"`
	// InInventory is false for a GPU that pods still hold but the node no
	// longer lists.
	InInventory        bool       `json:"inInventory"`
	MemoryMiB          int64      `json:"memoryMiB"`
	MemoryCapacityMiB  int64      `json:"memoryCapacityMiB"`
	MemoryAllocatedMiB int64      `json:"memoryAllocatedMiB"`
	CoresAllocated     int        `json:"coresAllocated"`
	CoresTotal         int        `json:"coresTotal"`
	SlotsUsed          int        `json:"slotsUsed"`
	SlotsTotal         int        `json:"slotsTotal"`
	Exclusive          bool       `json:"exclusive"`
	Pods               []PodShare `json:"pods"`
	Used               *GPUUsed   `json:"used,omitempty"`
}

// PodShare is one container's vGPU on a GPU.
type PodShare struct {
	Namespace string `json:"namespace"`
	// Pod is "" for a claim (DRA path) that no pod uses yet.
	Pod string `json:"pod"`
	// Claim is the ResourceClaim holding the share on the DRA path.
	Claim     string `json:"claim,omitempty"`
	Container string `json:"container"`
	Init      bool   `json:"init,omitempty"`
	// Sidecar marks a restartable init container, which runs beside the
	// app containers (docs/contract.md).
	Sidecar   bool           `json:"sidecar,omitempty"`
	MemoryMiB int64          `json:"memoryMiB"`
	Cores     int            `json:"cores"`
	Used      *ContainerUsed `json:"used,omitempty"`
}

// Free is the largest share the next pod can still get on one GPU.
type Free struct {
	GPU       int   `json:"gpu"`
	MemoryMiB int64 `json:"memoryMiB"`
	Cores     int   `json:"cores"`
	Slots     int   `json:"slots"`
}

// NodeSummary is one line of `describe node` without a name.
type NodeSummary struct {
	Name               string `json:"name"`
	GPUs               int    `json:"gpus"`
	HealthyGPUs        int    `json:"healthyGPUs"`
	SlotsUsed          int    `json:"slotsUsed"`
	SlotsTotal         int    `json:"slotsTotal"`
	MemoryAllocatedMiB int64  `json:"memoryAllocatedMiB"`
	MemoryCapacityMiB  int64  `json:"memoryCapacityMiB"`
	CoresAllocated     int    `json:"coresAllocated"`
	CoresTotal         int    `json:"coresTotal"`
	LargestFree        *Free  `json:"largestFree"`
}

// hasInventory reports whether the node publishes vgpu GPUs.
func hasInventory(n *corev1.Node) bool {
	_, ok := n.Annotations[contract.AnnotationDevices]
	return ok
}

// buildNode computes a node's report from its inventory and what is booked
// on it, read from either path's record (lib/booking), counting exactly as
// the scheduler's ledger does.
func buildNode(name string, inv device.Inventory, bookings []booking.Booking, warnings []string) NodeReport {
	l := ledger.New()
	l.SetInventory(name, inv)
	shares := map[string][]PodShare{}
	for _, b := range bookings {
		// Add books running pods even when they overcommit, which is
		// exactly what a report must show.
		_ = l.Add(b.Key(), b.Held())
		for _, c := range b.Assignment.Containers {
			for _, d := range c.Devices {
				shares[d.UUID] = append(shares[d.UUID], PodShare{
					Namespace: b.Namespace, Pod: b.Pod, Claim: b.Claim, Container: c.Name, Init: c.Init, Sidecar: c.Sidecar,
					MemoryMiB: d.MemoryMiB, Cores: d.Cores,
				})
			}
		}
	}
	r := NodeReport{Name: name, SplitCount: inv.SplitCount, MemoryScaling: inv.MemoryScaling, Warnings: warnings}
	for _, st := range l.State(name) {
		g := GPUReport{
			Index: st.GPU.Index, Model: st.GPU.Model, UUID: st.GPU.UUID, Healthy: st.GPU.Healthy, InInventory: st.Known,
			MemoryMiB:          st.GPU.MemoryMiB,
			MemoryCapacityMiB:  ledger.MemoryCapacity(st.GPU.MemoryMiB, inv.MemoryScaling),
			MemoryAllocatedMiB: st.Used.MemoryMiB,
			CoresAllocated:     st.Used.Cores,
			CoresTotal:         100,
			SlotsUsed:          st.Used.Slots,
			SlotsTotal:         inv.SplitCount,
			Exclusive:          st.Used.Exclusive > 0,
			Pods:               shares[st.GPU.UUID],
		}
		if !st.Known {
			g.Index = -1
		}
		if g.Pods == nil {
			g.Pods = []PodShare{}
		}
		r.GPUs = append(r.GPUs, g)
	}
	r.LargestFree = largestFree(r.GPUs)
	return r
}

// largestFree is the GPU where the next pod can get the most memory (then
// cores): healthy, not held whole, with a vGPU slot left.
func largestFree(gs []GPUReport) *Free {
	var best *Free
	for _, g := range gs {
		if !g.InInventory || !g.Healthy || g.Exclusive || g.SlotsUsed >= g.SlotsTotal {
			continue
		}
		f := Free{GPU: g.Index, MemoryMiB: max(g.MemoryCapacityMiB-g.MemoryAllocatedMiB, 0), Cores: max(g.CoresTotal-g.CoresAllocated, 0), Slots: g.SlotsTotal - g.SlotsUsed}
		// A pod without gpucores still fits when every core is promised.
		if f.MemoryMiB == 0 {
			continue
		}
		if best == nil || f.MemoryMiB > best.MemoryMiB || f.MemoryMiB == best.MemoryMiB && f.Cores > best.Cores {
			best = &f
		}
	}
	return best
}

func summarize(r NodeReport) NodeSummary {
	s := NodeSummary{Name: r.Name, LargestFree: r.LargestFree}
	for _, g := range r.GPUs {
		if !g.InInventory {
			s.SlotsUsed += g.SlotsUsed
			s.MemoryAllocatedMiB += g.MemoryAllocatedMiB
			s.CoresAllocated += g.CoresAllocated
			continue
		}
		s.GPUs++
		if g.Healthy {
			s.HealthyGPUs++
		}
		s.SlotsUsed += g.SlotsUsed
		s.SlotsTotal += g.SlotsTotal
		s.MemoryAllocatedMiB += g.MemoryAllocatedMiB
		s.MemoryCapacityMiB += g.MemoryCapacityMiB
		s.CoresAllocated += g.CoresAllocated
		s.CoresTotal += g.CoresTotal
	}
	return s
}
