// Package dra is vgpu's vocabulary on the Dynamic Resource Allocation path
// (docs/dra.md): the driver, attribute and capacity names, the devices a node
// publishes, and the claim a vgpu request becomes. It only builds API
// objects; publishing and admission live in the binaries.
package dra

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"

	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// Driver is the DRA driver name, the attribute domain and the DeviceClass.
const Driver = "gpu.vgpu.io"

// DeviceClass is the class every vgpu claim names.
const DeviceClass = Driver

// Attribute names, in the Driver's domain.
const (
	AttrUUID      = "uuid"
	AttrModel     = "model"
	AttrIndex     = "index"
	AttrNUMANode  = "numaNode"
	AttrMemoryMiB = "memoryMiB"
)

// Consumable capacity names (docs/dra.md#what-the-node-agent-publishes).
const (
	CapMemory = "memory" // MiB × deviceMemoryScaling, as a Mi quantity
	CapCores  = "cores"  // % of the SMs
	CapVGPUs  = "vgpus"  // sharers, deviceSplitCount
)

// ModelCapacity names the capacity that marks a device as a GPU of model m:
// "model_" and a hash of the model's name and memory (capacity names are C
// identifiers of at most 32 characters). Its value is 0 and nothing can
// consume it; a claim that must land on model m names it with 0, and the
// allocator skips every device without it by a map lookup, where a CEL
// selector on the model would be evaluated on every device of every node
// kube-scheduler checks (docs/dra.md#measured).
func ModelCapacity(m Model) resourcev1.QualifiedName {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d", m.Name, m.MemoryMiB))
	return resourcev1.QualifiedName("model_" + hex.EncodeToString(sum[:8]))
}

// TaintUnhealthy marks a GPU the health watch gave up on.
const TaintUnhealthy = Driver + "/unhealthy"

// MaxDevicesPerSlice is the API's limit for slices whose devices carry
// taints or consumable capacity.
const MaxDevicesPerSlice = resourcev1.ResourceSliceMaxDevicesWithAdvancedFeatures

// DeviceName is the device of the GPU with this index.
func DeviceName(index int) string { return fmt.Sprintf("gpu-%d", index) }

// Devices turns a node's GPUs and the settings in force into DRA devices,
// in index order: the DRA allocator takes the first device that fits, so
// the order is the GPU-level policy (first-fit packing, docs/dra.md#policies).
func Devices(gpus []device.GPU, s settings.Settings) ([]resourcev1.Device, error) {
	if len(gpus) > MaxDevicesPerSlice {
		return nil, fmt.Errorf("%d GPUs: one ResourceSlice holds at most %d devices with consumable capacity", len(gpus), MaxDevicesPerSlice)
	}
	if s.DeviceSplitCount < 1 {
		return nil, fmt.Errorf("deviceSplitCount %d: must be at least 1", s.DeviceSplitCount)
	}
	if s.DeviceMemoryScaling < 1 {
		return nil, fmt.Errorf("deviceMemoryScaling %g: must be at least 1", s.DeviceMemoryScaling)
	}
	out := make([]resourcev1.Device, 0, len(gpus))
	zero := *resource.NewQuantity(0, resource.DecimalSI)
	for _, g := range gpus {
		// Scaled memory is floored: a fraction of a MiB cannot be booked.
		mem := int64(math.Floor(float64(g.MemoryMiB) * s.DeviceMemoryScaling))
		d := resourcev1.Device{
			Name: DeviceName(g.Index),
			Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{
				AttrUUID:      {StringValue: ptr(g.UUID)},
				AttrModel:     {StringValue: ptr(g.Model)},
				AttrIndex:     {IntValue: ptr(int64(g.Index))},
				AttrNUMANode:  {IntValue: ptr(int64(g.NUMANode))},
				AttrMemoryMiB: {IntValue: ptr(g.MemoryMiB)},
			},
			Capacity: map[resourcev1.QualifiedName]resourcev1.DeviceCapacity{
				// Unnamed memory books the whole GPU, as a pod without
				// gpumem does on the extender path.
				CapMemory: {Value: MiB(mem), RequestPolicy: &resourcev1.CapacityRequestPolicy{
					Default:    ptr(MiB(mem)),
					ValidRange: &resourcev1.CapacityRequestPolicyRange{Min: ptr(MiB(1)), Step: ptr(MiB(1))},
				}},
				// Unnamed cores book none: gpucores omitted means no limit.
				CapCores: {Value: *resource.NewQuantity(100, resource.DecimalSI), RequestPolicy: &resourcev1.CapacityRequestPolicy{
					Default: ptr(*resource.NewQuantity(0, resource.DecimalSI)),
					ValidRange: &resourcev1.CapacityRequestPolicyRange{
						Min: ptr(*resource.NewQuantity(0, resource.DecimalSI)), Max: ptr(*resource.NewQuantity(100, resource.DecimalSI)),
						Step: ptr(*resource.NewQuantity(1, resource.DecimalSI))},
				}},
				// Marks the model; never consumed.
				ModelCapacity(Model{Name: g.Model, MemoryMiB: g.MemoryMiB}): {Value: zero, RequestPolicy: &resourcev1.CapacityRequestPolicy{
					Default: ptr(zero), ValidValues: []resource.Quantity{zero}}},
				// Every share takes one vGPU slot, so deviceSplitCount caps sharers.
				CapVGPUs: {Value: *resource.NewQuantity(int64(s.DeviceSplitCount), resource.DecimalSI), RequestPolicy: &resourcev1.CapacityRequestPolicy{
					Default: ptr(*resource.NewQuantity(1, resource.DecimalSI)),
					ValidRange: &resourcev1.CapacityRequestPolicyRange{
						Min: ptr(*resource.NewQuantity(1, resource.DecimalSI)), Step: ptr(*resource.NewQuantity(1, resource.DecimalSI))},
				}},
			},
			AllowMultipleAllocations: ptr(true),
		}
		if !g.Healthy {
			// NoSchedule, never NoExecute: running pods keep their GPU.
			d.Taints = []resourcev1.DeviceTaint{{Key: TaintUnhealthy, Value: "true", Effect: resourcev1.DeviceTaintEffectNoSchedule}}
		}
		out = append(out, d)
	}
	return out, nil
}

// MiB is n MiB as a binary quantity.
func MiB(n int64) resource.Quantity {
	return *resource.NewQuantity(n*1024*1024, resource.BinarySI)
}

func ptr[T any](v T) *T { return &v }

// Inventory reads a node's GPUs and sharing settings back from its vgpu
// ResourceSlices, the DRA path's counterpart of the vgpu.io/devices
// annotation: the split count is the vgpus capacity, the memory scaling the
// memory capacity over the GPU's memory, a GPU with the unhealthy taint is
// unhealthy. ok is false when no slice of node lists a GPU.
func Inventory(node string, rs []*resourcev1.ResourceSlice) (inv device.Inventory, ok bool) {
	inv.MemoryScaling = 1
	for _, s := range rs {
		if s.Spec.Driver != Driver || s.Spec.Pool.Name != node {
			continue
		}
		for _, d := range s.Spec.Devices {
			str := func(n resourcev1.QualifiedName) string {
				if v := d.Attributes[n].StringValue; v != nil {
					return *v
				}
				return ""
			}
			num := func(n resourcev1.QualifiedName, or int64) int64 {
				if v := d.Attributes[n].IntValue; v != nil {
					return *v
				}
				return or
			}
			g := device.GPU{UUID: str(AttrUUID), Model: str(AttrModel), Index: int(num(AttrIndex, -1)),
				MemoryMiB: num(AttrMemoryMiB, 0), NUMANode: int(num(AttrNUMANode, -1)), Healthy: true}
			if g.UUID == "" {
				continue
			}
			for _, t := range d.Taints {
				if t.Key == TaintUnhealthy {
					g.Healthy = false
				}
			}
			if c, found := d.Capacity[CapVGPUs]; found {
				inv.SplitCount = max(inv.SplitCount, int(c.Value.Value()))
			}
			if c, found := d.Capacity[CapMemory]; found && g.MemoryMiB > 0 {
				// Rounded: the capacity was floored to whole MiB.
				ratio := float64(c.Value.Value()/(1024*1024)) / float64(g.MemoryMiB)
				inv.MemoryScaling = max(inv.MemoryScaling, math.Round(ratio*1000)/1000)
			}
			inv.GPUs = append(inv.GPUs, g)
		}
	}
	slices.SortFunc(inv.GPUs, func(a, b device.GPU) int { return a.Index - b.Index })
	return inv, len(inv.GPUs) > 0
}
