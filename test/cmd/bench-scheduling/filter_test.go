package main

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/structured"

	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// classes lists the one DeviceClass.
type classes struct{ c *resourcev1.DeviceClass }

func (l classes) List() ([]*resourcev1.DeviceClass, error) {
	return []*resourcev1.DeviceClass{l.c}, nil
}
func (l classes) Get(name string) (*resourcev1.DeviceClass, error) {
	if name != l.c.Name {
		return nil, fmt.Errorf("no class %s", name)
	}
	return l.c, nil
}

// features are kube-scheduler 1.37's defaults (AllocatorFeatures with the
// default gates): the "incubating" allocator.
var features = structured.Features{AdminAccess: true, PrioritizedList: true, PartitionableDevices: true,
	DeviceTaints: true, DeviceBindingAndStatus: true, ConsumableCapacity: true, FractionalCapacityRange: true}

// nothingAllocated is the allocated state of an empty cluster.
func nothingAllocated() structured.AllocatedState {
	return structured.AllocatedState{AllocatedDevices: sets.New[structured.DeviceID](),
		AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](), AggregatedCapacity: structured.NewConsumedCapacityCollection()}
}

// BenchmarkDRAFilter measures what kube-scheduler's DRA plugin does in
// Filter for one pod of the dra mode: the structured allocator on every
// node it checks, with the slices and claims of the dra mode, on a
// cluster where earlier pods already hold shares (first fit, spread over
// the nodes as kube-scheduler spreads pods without CPU requests).
// ns/op is per node.
func BenchmarkDRAFilter(b *testing.B) {
	const nodes, held = 100, 500 // 5 shares per node, as 1,500 pods on 300 nodes
	var slices []*resourcev1.ResourceSlice
	var models []dra.Model
	var nodeObjs []*corev1.Node
	for n := range nodes {
		name := fmt.Sprintf("node-%03d", n)
		gpus, err := gpunode.Discover(name, gpunode.A100_80GB, 8)
		if err != nil {
			b.Fatal(err)
		}
		s, err := draSlice(name, gpus)
		if err != nil {
			b.Fatal(err)
		}
		slices = append(slices, s)
		nodeObjs = append(nodeObjs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
		if n == 0 {
			models = append(models, dra.Model{Name: gpus[0].Model, MemoryMiB: gpus[0].MemoryMiB})
		}
	}
	lister := classes{draClass()}
	cache := cel.NewCache(10, cel.Features{EnableConsumableCapacity: true})
	state := nothingAllocated()
	claim := func(i int) *resourcev1.ResourceClaim {
		spec, err := draClaimSpec(i, models)
		if err != nil {
			b.Fatal(err)
		}
		return &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: draClaim(i), Namespace: namespace, UID: types.UID(draClaim(i))}, Spec: spec}
	}
	ctx := context.Background()
	for i := range held {
		a, err := structured.NewAllocator(ctx, features, state, lister, slices, cache)
		if err != nil {
			b.Fatal(err)
		}
		res, err := a.Allocate(ctx, nodeObjs[i%nodes], []*resourcev1.ResourceClaim{claim(i)})
		if err != nil || len(res) != 1 {
			b.Fatalf("pod %d: %v %d", i, err, len(res))
		}
		for _, r := range res[0].Devices.Results {
			id := structured.MakeDeviceID(r.Driver, r.Pool, r.Device)
			if r.ShareID == nil {
				state.AllocatedDevices.Insert(id)
				continue
			}
			state.AllocatedSharedDeviceIDs.Insert(structured.MakeSharedDeviceID(id, r.ShareID))
			state.AggregatedCapacity.Insert(structured.NewDeviceConsumedCapacity(id, r.ConsumedCapacity))
		}
	}
	for _, kind := range []struct {
		name string
		pod  int
	}{{"gpumem", held}, {"gpumem-percentage", held + 1}} {
		b.Run(kind.name, func(b *testing.B) {
			claims := []*resourcev1.ResourceClaim{claim(kind.pod)}
			// One allocator per pod, made in PreFilter; Filter calls it
			// for each node.
			a, err := structured.NewAllocator(ctx, features, state, lister, slices, cache)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu0 := cpuTime()
			n := 0
			for i := 0; b.Loop(); i++ {
				n++
				if res, err := a.Allocate(ctx, nodeObjs[i%nodes], claims); err != nil || len(res) != 1 {
					b.Fatalf("%v %d", err, len(res))
				}
			}
			// The machine is shared: CPU time per node is steadier than
			// wall time.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/op")
		})
	}
}

// TestPercentageLandsOnItsOwnModel runs the claims vgpu's webhook writes
// through kube-scheduler's allocator on a node with two GPU models: a
// gpumem-percentage share lands on a GPU of the model its alternative names
// (no CEL selector picks the model, the model's capacity does) and books
// that model's share of memory; a GPU of another model is never taken for it.
func TestPercentageLandsOnItsOwnModel(t *testing.T) {
	gpus, err := gpunode.Discover("node-a", gpunode.A100_80GB, 1)
	if err != nil {
		t.Fatal(err)
	}
	big := gpus[0]
	big.Index = 1
	small := device.GPU{UUID: "GPU-small", Index: 0, Model: "NVIDIA T4", MemoryMiB: 15360, NUMANode: -1, Healthy: true}
	// The T4 is gpu-0: first fit tries it first.
	slice, err := draSlice("node-a", []device.GPU{small, big})
	if err != nil {
		t.Fatal(err)
	}
	models := []dra.Model{{Name: small.Model, MemoryMiB: small.MemoryMiB}, {Name: big.Model, MemoryMiB: big.MemoryMiB}}
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		sel       request.Selector
		device    string
		memoryMiB int64
	}{
		// The A100's alternative comes first (alternatives are sorted by
		// model name); 10 % of an A100 would fit on the T4 too, but the
		// alternative must not take it.
		{"10 % of an A100 on the A100", request.Selector{}, "gpu-1", big.MemoryMiB / 10},
		{"10 % of a T4 on the T4", request.Selector{UseTypes: []string{"T4"}}, "gpu-0", small.MemoryMiB / 10},
	} {
		spec, err := dra.ClaimSpec(request.Container{Name: "c", Count: 1, MemoryPercent: 10}, tc.sel, models)
		if err != nil {
			t.Fatal(err)
		}
		a, err := structured.NewAllocator(ctx, features, nothingAllocated(), classes{draClass()}, []*resourcev1.ResourceSlice{slice}, cel.NewCache(10, cel.Features{EnableConsumableCapacity: true}))
		if err != nil {
			t.Fatal(err)
		}
		res, err := a.Allocate(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}},
			[]*resourcev1.ResourceClaim{{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns", UID: "c"}, Spec: spec}})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || len(res[0].Devices.Results) != 1 {
			t.Fatalf("%s: not allocated: %+v", tc.name, res)
		}
		got := res[0].Devices.Results[0]
		mem := got.ConsumedCapacity[dra.CapMemory]
		if got.Device != tc.device || mem.Value()/(1024*1024) != tc.memoryMiB {
			t.Errorf("%s: got %s with %v: want %s with %d MiB", tc.name, got.Device, got.ConsumedCapacity, tc.device, tc.memoryMiB)
		}
	}
}
