package gpunode

import (
	"strings"
	"testing"

	"github.com/vgpu-io/vgpu/internal/gpumock"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
)

func TestNodeDescribesMockGPUs(t *testing.T) {
	for _, tc := range []struct {
		model     Model
		name      string
		memoryMiB int64
	}{
		{A100_80GB, "NVIDIA A100-SXM4-80GB", 81920},
		{H100_80GB, "NVIDIA H100 80GB HBM3", 81920},
		{A30, "NVIDIA A30-PCIE-24GB", 24576},
		{T4, "Tesla T4", 15360},
	} {
		t.Run(string(tc.model), func(t *testing.T) {
			n, err := Node(Spec{Model: tc.model, GPUs: 4, SplitCount: 5}, 7)
			if err != nil {
				t.Fatal(err)
			}
			if n.Name != "gpu-node-7" {
				t.Errorf("name = %s", n.Name)
			}
			inv, err := annotation.DecodeDevices(n.Annotations[contract.AnnotationDevices])
			if err != nil {
				t.Fatal(err)
			}
			if inv.SplitCount != 5 || len(inv.GPUs) != 4 {
				t.Fatalf("inventory = %+v", inv)
			}
			uuids := map[string]bool{}
			for i, g := range inv.GPUs {
				if g.Model != tc.name || g.MemoryMiB != tc.memoryMiB || g.Index != i || !g.Healthy {
					t.Errorf("gpu %d = %+v, want %s with %d MiB", i, g, tc.name, tc.memoryMiB)
				}
				uuids[g.UUID] = true
				if want := gpumock.UUID(n.Name, i); g.UUID != want {
					t.Errorf("gpu %d uuid %s, want %s: the uuid a device plugin or monitor simulating %s finds", i, g.UUID, want, n.Name)
				}
			}
			if len(uuids) != 4 {
				t.Errorf("UUIDs not distinct: %v", uuids)
			}
			for _, rl := range []string{"capacity", "allocatable"} {
				res := n.Status.Capacity
				if rl == "allocatable" {
					res = n.Status.Allocatable
				}
				if q := res[contract.ResourceGPU]; q.Value() != 20 {
					t.Errorf("%s %s = %s, want 20", rl, contract.ResourceGPU, q.String())
				}
			}
		})
	}
}

func TestNodeRejectsUnknownModel(t *testing.T) {
	_, err := Node(Spec{Model: "V100"}, 0)
	if err == nil || !strings.Contains(err.Error(), `"V100"`) || !strings.Contains(err.Error(), "h100-80gb") {
		t.Fatalf("error = %v, want it to name the model and the known ones", err)
	}
}

func TestNodesGetDistinctPodCIDRs(t *testing.T) {
	seen := map[string]int{}
	for _, i := range []int{0, 1, 255, 256, 1000, 32767} {
		n, err := Node(Spec{NoInventory: true}, i)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := n.Annotations[contract.AnnotationDevices]; ok {
			t.Error("NoInventory node carries an inventory")
		}
		if j, dup := seen[n.Spec.PodCIDR]; dup {
			t.Errorf("nodes %d and %d share pod CIDR %s", j, i, n.Spec.PodCIDR)
		}
		seen[n.Spec.PodCIDR] = i
	}
}
