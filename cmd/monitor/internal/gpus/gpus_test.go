package gpus

import (
	"strings"
	"testing"

	"github.com/vgpu-io/vgpu/internal/gpumock"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

func TestReadMockDGX(t *testing.T) {
	srv := dgxa100.New()
	Idle(srv)
	d0 := srv.Devices[0].(*server.Device)
	d0.MemoryInfo.Used = 3 << 30
	d0.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 42}, nvml.SUCCESS }
	d0.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 900, UsedGpuMemory: 1 << 30}, {Pid: 800, UsedGpuMemory: 2 << 30}}, nvml.SUCCESS
	}
	var asked []uint64
	d0.GetProcessUtilizationFunc = func(since uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		asked = append(asked, since)
		if since >= 200 {
			return nil, nvml.ERROR_NOT_FOUND
		}
		return []nvml.ProcessUtilizationSample{{Pid: 900, TimeStamp: 100, SmUtil: 10}, {Pid: 900, TimeStamp: 200, SmUtil: 35}, {Pid: 800, TimeStamp: 150, SmUtil: 5}}, nvml.SUCCESS
	}
	d1 := srv.Devices[1].(*server.Device)
	d1.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED }
	d1.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED }

	s := New(srv)
	now := time.Unix(100, 0)
	s.now = func() time.Time { return now }
	gs, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 8 {
		t.Fatalf("%d GPUs, want the DGX's 8", len(gs))
	}
	g := gs[0]
	if g.Model != "Mock NVIDIA A100-SXM4-40GB" || !strings.HasPrefix(g.UUID, "GPU-") || g.MemoryTotalBytes != 40960<<20 || g.MemoryUsedBytes != 3<<30 || g.UtilizationPercent != 42 {
		t.Fatalf("GPU 0 = %+v", g)
	}
	want := []Process{{PID: 800, MemoryUsedBytes: 2 << 30, SMPercent: 5}, {PID: 900, MemoryUsedBytes: 1 << 30, SMPercent: 35}}
	if len(g.Processes) != 2 || g.Processes[0] != want[0] || g.Processes[1] != want[1] {
		t.Fatalf("processes = %+v, want newest sample per pid %+v", g.Processes, want)
	}
	if !gs[0].PerProcessSM || gs[1].PerProcessSM || !gs[2].PerProcessSM {
		t.Fatalf("per-process sampling: %v %v %v, want true (samples), false (not supported), true (none yet)", gs[0].PerProcessSM, gs[1].PerProcessSM, gs[2].PerProcessSM)
	}
	if gs[1].UtilizationPercent != -1 {
		t.Fatalf("unsupported utilisation read as %d, want -1 (unknown)", gs[1].UtilizationPercent)
	}

	// Between NVML samples, a process keeps its last value...
	now = now.Add(time.Second)
	gs, _ = s.Read()
	if gs[0].Processes[1].SMPercent != 35 {
		t.Fatalf("between samples: %+v", gs[0].Processes)
	}
	if asked[len(asked)-1] != 200 {
		t.Fatalf("second read asked for samples since %d, want since the newest seen (200)", asked[len(asked)-1])
	}
	// ...until it is stale.
	now = now.Add(SampleTTL)
	gs, _ = s.Read()
	if gs[0].Processes[1].SMPercent != 0 {
		t.Fatalf("stale sample still counted: %+v", gs[0].Processes)
	}
}

// The monitor's --nvml takes the device plugin's values, with the same
// uuids for the same node, and still the monitor's former model names.
func TestOpenSpec(t *testing.T) {
	for spec, n := range map[string]int{"mock:a100": 8, "mock:dgxh100": 8, "mock:H200": 8, "mock:b200": 8, "mock:t4:4": 4} {
		s, err := Open(spec, "node-a")
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		gs, err := s.Read()
		if err != nil || len(gs) != n {
			t.Fatalf("%s: %d GPUs, %v", spec, len(gs), err)
		}
		for i, g := range gs {
			if g.UUID != gpumock.UUID("node-a", i) {
				t.Errorf("%s: GPU %d uuid %s, want the device plugin's %s", spec, i, g.UUID, gpumock.UUID("node-a", i))
			}
		}
		s.Close()
	}
	for spec, want := range map[string]string{
		"mock:k80": `mock model "k80" is unknown: the models are a100-40gb, a100-80gb, a30, b200`,
		"fake":     `must be empty or "real" (the driver's NVML), or mock:<model>[:<count>]`,
	} {
		if _, err := Open(spec, "node-a"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want %q", spec, err, want)
		}
	}
}

// A Vulkan or OpenGL program holds GPU memory that no CUDA hook sees: it is
// on NVML's graphics list, not the compute list, and must be read too.
func TestReadMergesComputeGraphicsAndMPS(t *testing.T) {
	srv := dgxa100.New()
	Idle(srv)
	d0 := srv.Devices[0].(*server.Device)
	d0.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 10, UsedGpuMemory: 1 << 30}, {Pid: 12, UsedGpuMemory: ^uint64(0)}}, nvml.SUCCESS
	}
	d0.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 11, UsedGpuMemory: 3 << 30}, {Pid: 10, UsedGpuMemory: 1 << 30}}, nvml.SUCCESS
	}
	d0.GetMPSComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED }
	gs, err := New(srv).Read()
	if err != nil {
		t.Fatal(err)
	}
	want := []Process{{PID: 10, MemoryUsedBytes: 1 << 30}, {PID: 11, MemoryUsedBytes: 3 << 30}, {PID: 12, MemoryUnknown: true}}
	got := gs[0].Processes
	if len(got) != len(want) {
		t.Fatalf("processes = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("process %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
