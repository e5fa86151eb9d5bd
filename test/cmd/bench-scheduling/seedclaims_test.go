package main

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/structured"

	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/request"
)

// TestSeedClaimsOnTheAllocator places, one after another on one node, the
// claims vgpu's webhook writes, through kube-scheduler's allocator: a
// whole GPU keeps others off it and cannot take a GPU that holds a share;
// N vGPUs land on N GPUs; a percentage with N GPUs takes GPUs of one model,
// so on a node with one GPU of each of two models it does not land.
func TestSeedClaimsOnTheAllocator(t *testing.T) {
	a40 := device.GPU{UUID: "GPU-a", Index: 0, Model: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40960, NUMANode: -1, Healthy: true}
	a40b := device.GPU{UUID: "GPU-b", Index: 1, Model: a40.Model, MemoryMiB: 40960, NUMANode: -1, Healthy: true}
	a80 := device.GPU{UUID: "GPU-c", Index: 1, Model: "NVIDIA A100-SXM4-80GB", MemoryMiB: 81920, NUMANode: -1, Healthy: true}
	models := []dra.Model{{Name: a40.Model, MemoryMiB: a40.MemoryMiB}, {Name: a80.Model, MemoryMiB: a80.MemoryMiB}}
	type step struct {
		c    request.Container
		want []string // devices, in order; nil: does not land
	}
	share := request.Container{Name: "c", Count: 1, MemoryMiB: 1000, Cores: 10}
	whole := request.Container{Name: "c", Count: 1, Exclusive: true}
	for _, tc := range []struct {
		name  string
		gpus  []device.GPU
		steps []step
	}{
		{"a whole GPU keeps shares off", []device.GPU{a40}, []step{{whole, []string{"gpu-0"}}, {share, nil}}},
		{"a shared GPU cannot be taken whole", []device.GPU{a40}, []step{{share, []string{"gpu-0"}}, {whole, nil}}},
		{"two vGPUs on two GPUs", []device.GPU{a40, a40b}, []step{{request.Container{Name: "c", Count: 2, MemoryMiB: 1000}, []string{"gpu-0", "gpu-1"}}}},
		{"a percentage of two GPUs of one model", []device.GPU{a40, a40b}, []step{{request.Container{Name: "c", Count: 2, MemoryPercent: 50}, []string{"gpu-0", "gpu-1"}}}},
		{"a percentage of two GPUs does not mix models", []device.GPU{a40, a80}, []step{{request.Container{Name: "c", Count: 2, MemoryPercent: 50}, nil}}},
	} {
		slice, err := draSlice("node-a", tc.gpus)
		if err != nil {
			t.Fatal(err)
		}
		state := nothingAllocated()
		ctx := context.Background()
		for i, s := range tc.steps {
			spec, err := dra.ClaimSpec(s.c, request.Selector{}, models)
			if err != nil {
				t.Fatal(err)
			}
			a, err := structured.NewAllocator(ctx, features, state, classes{draClass()}, []*resourcev1.ResourceSlice{slice}, cel.NewCache(10, cel.Features{EnableConsumableCapacity: true}))
			if err != nil {
				t.Fatal(err)
			}
			uid := types.UID(tc.name + string(rune('0'+i)))
			res, err := a.Allocate(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}},
				[]*resourcev1.ResourceClaim{{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns", UID: uid}, Spec: spec}})
			if err != nil {
				t.Fatalf("%s, step %d: %v", tc.name, i, err)
			}
			var got []string
			if len(res) == 1 {
				for _, r := range res[0].Devices.Results {
					got = append(got, r.Device)
					id := structured.MakeDeviceID(r.Driver, r.Pool, r.Device)
					state.AllocatedSharedDeviceIDs.Insert(structured.MakeSharedDeviceID(id, r.ShareID))
					state.AggregatedCapacity.Insert(structured.NewDeviceConsumedCapacity(id, r.ConsumedCapacity))
				}
			}
			if !slices.Equal(got, s.want) {
				t.Errorf("%s, step %d: allocated %v, want %v", tc.name, i, got, s.want)
			}
		}
	}
}
