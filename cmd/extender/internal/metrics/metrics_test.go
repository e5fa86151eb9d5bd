package metrics

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/request"
)

func inv(split int, healthy ...bool) device.Inventory {
	i := device.Inventory{SplitCount: split, MemoryScaling: 1}
	for n, h := range healthy {
		i.GPUs = append(i.GPUs, device.GPU{UUID: "g" + string(rune('0'+n)), Index: n, Model: "NVIDIA A100 80GB", MemoryMiB: 80000, Healthy: h})
	}
	return i
}

// TestReasonsOfRealFits produces each reason with lib/placement itself, so
// that a rewording there breaks the labels here, not silently in a graph.
func TestReasonsOfRealFits(t *testing.T) {
	dev := func(uuid string, mem int64, cores int) assign.Pod {
		return assign.Pod{Node: "n", Containers: []assign.Container{{Name: "c", Devices: []assign.Device{{UUID: uuid, MemoryMiB: mem, Cores: cores}}}}}
	}
	cases := []struct {
		label string
		inv   *device.Inventory
		held  []assign.Pod
		want  request.Container
		sel   request.Selector
	}{
		{label: ReasonNoInventory, want: request.Container{Name: "c", Count: 1, MemoryMiB: 1}},
		{label: ReasonNoGPUs, inv: &device.Inventory{SplitCount: 1, MemoryScaling: 1}, want: request.Container{Name: "c", Count: 1, MemoryMiB: 1}},
		{label: ReasonUnhealthy, inv: ptr(inv(10, false)), want: request.Container{Name: "c", Count: 1, MemoryMiB: 1}},
		{label: ReasonSelector, inv: ptr(inv(10, true)), want: request.Container{Name: "c", Count: 1, MemoryMiB: 1}, sel: request.Selector{UseTypes: []string{"H100"}}},
		{label: ReasonHeldWhole, inv: ptr(inv(10, true)), held: []assign.Pod{dev("g0", 80000, 100)}, want: request.Container{Name: "c", Count: 1, MemoryMiB: 1}},
		{label: ReasonNeedsWhole, inv: ptr(inv(10, true)), held: []assign.Pod{dev("g0", 10, 10)}, want: request.Container{Name: "c", Count: 1, Exclusive: true}},
		{label: ReasonSlots, inv: ptr(inv(1, true)), held: []assign.Pod{dev("g0", 10, 10)}, want: request.Container{Name: "c", Count: 1, MemoryMiB: 1}},
		{label: ReasonMemory, inv: ptr(inv(10, true)), held: []assign.Pod{dev("g0", 79000, 10)}, want: request.Container{Name: "c", Count: 1, MemoryMiB: 2000}},
		{label: ReasonCores, inv: ptr(inv(10, true)), held: []assign.Pod{dev("g0", 10, 90)}, want: request.Container{Name: "c", Count: 1, MemoryMiB: 1, Cores: 20}},
	}
	for _, tc := range cases {
		t.Run(tc.label, func(t *testing.T) {
			l := ledger.New()
			if tc.inv != nil {
				l.SetInventory("n", *tc.inv)
			}
			for i, a := range tc.held {
				if err := l.Reserve(string(rune('a'+i)), a); err != nil {
					t.Fatal(err)
				}
			}
			pod := &request.Pod{Containers: []request.Container{tc.want}, Selector: tc.sel}
			fits, failed := placement.Filter(l, pod, []string{"n"}, placement.Policies{Node: "binpack", GPU: "spread"})
			if len(fits) != 0 {
				t.Fatalf("the pod fits; the case is wrong")
			}
			got := Reasons(failed["n"])
			if !slices.Contains(got, tc.label) {
				t.Errorf("reason %q labelled %v, want %s", failed["n"], got, tc.label)
			}
		})
	}
	if got := Reasons("something new"); !slices.Equal(got, []string{ReasonOther}) {
		t.Errorf("unknown reason labelled %v", got)
	}
}

func ptr[T any](v T) *T { return &v }

func TestAllocationPerNode(t *testing.T) {
	l := ledger.New()
	l.SetInventory("n", inv(4, true, true, false))
	if err := l.Reserve("p", assign.Pod{Node: "n", Containers: []assign.Container{{Name: "c", Devices: []assign.Device{
		{UUID: "g0", MemoryMiB: 1000, Cores: 30}, {UUID: "g1", MemoryMiB: 500, Cores: 0}}}}}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	New(reg, l)
	want := `
# HELP vgpu_extender_node_allocated_memory_mib GPU memory booked on the node, MiB, summed over its GPUs.
# TYPE vgpu_extender_node_allocated_memory_mib gauge
vgpu_extender_node_allocated_memory_mib{node="n"} 1500
# HELP vgpu_extender_node_allocated_cores_percent GPU cores booked on the node, in percent of one GPU, summed over its GPUs.
# TYPE vgpu_extender_node_allocated_cores_percent gauge
vgpu_extender_node_allocated_cores_percent{node="n"} 30
# HELP vgpu_extender_node_allocated_slots vGPU slots booked on the node, summed over its GPUs.
# TYPE vgpu_extender_node_allocated_slots gauge
vgpu_extender_node_allocated_slots{node="n"} 2
# HELP vgpu_extender_node_slots_capacity vGPU slots of the node's healthy GPUs (split count x GPUs).
# TYPE vgpu_extender_node_slots_capacity gauge
vgpu_extender_node_slots_capacity{node="n"} 8
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"vgpu_extender_node_allocated_memory_mib", "vgpu_extender_node_allocated_cores_percent",
		"vgpu_extender_node_allocated_slots", "vgpu_extender_node_slots_capacity"); err != nil {
		t.Error(err)
	}
}
