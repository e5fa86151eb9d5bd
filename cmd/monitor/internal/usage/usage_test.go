package usage

import (
	"fmt"
	"testing"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/procs"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
)

type owners map[uint32]procs.Owner

func (o owners) Owner(pid uint32) (procs.Owner, error) {
	if w, ok := o[pid]; ok {
		return w, nil
	}
	return procs.Owner{}, fmt.Errorf("pid %d: not in a pod", pid)
}

// Two containers of one pod share a GPU, each with its own pid namespace:
// both main processes are pid 1. Each container gets its own utilisation.
func TestSamePIDInTwoContainers(t *testing.T) {
	const pod, gpu = "uid-1", "GPU-0"
	dev := []regions.Device{{UUID: gpu}}
	cs := []Container{
		{PodUIDs: []string{pod}, Region: regions.Region{Devices: dev, Processes: []regions.Process{{PID: 1, StartTime: 500}}}},
		{PodUIDs: []string{pod}, Region: regions.Region{Devices: dev, Processes: []regions.Process{{PID: 1, StartTime: 900}}}},
	}
	gs := []gpus.GPU{{UUID: gpu, Processes: []gpus.Process{{PID: 4001, SMPercent: 20}, {PID: 4002, SMPercent: 50}}}}
	got := Utilization(cs, gs, owners{
		4001: {PodUID: pod, NSPID: 1, StartTime: 500},
		4002: {PodUID: pod, NSPID: 1, StartTime: 900},
	})
	if got[0][gpu] != 20 || got[1][gpu] != 50 {
		t.Fatalf("utilisation %v %v, want 20 and 50", got[0], got[1])
	}
}
