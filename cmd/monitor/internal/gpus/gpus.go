// Package gpus reads the node's GPUs through NVML: memory, utilisation and
// the processes running on each.
package gpus

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/vgpu-io/vgpu/internal/gpumock"
)

// Process is one process using a GPU, as NVML sees it: host pid namespace.
type Process struct {
	PID uint32
	// MemoryUsedBytes is what NVML counts for the process on the GPU:
	// its allocations and its context. MemoryUnknown says NVML could not
	// tell (NVML_VALUE_NOT_AVAILABLE); it is then 0.
	MemoryUsedBytes uint64
	MemoryUnknown   bool
	// SMPercent is the process's share of the SMs over the last sample
	// window, 0 when NVML had no sample for it.
	SMPercent uint32
}

// GPU is the state of one physical GPU at one moment.
type GPU struct {
	Index            int
	UUID             string
	Model            string
	MemoryTotalBytes uint64
	MemoryUsedBytes  uint64
	// UtilizationPercent is the GPU's busy percentage; -1 when NVML
	// cannot tell (e.g. not supported on this device).
	UtilizationPercent int
	Processes          []Process
	// PerProcessSM is false when NVML cannot sample utilisation per
	// process on this GPU; SMPercent is then 0 for every process.
	PerProcessSM bool
}

// Source reads GPUs from one NVML library handle. It is safe for
// concurrent use: scrapes may overlap.
type Source struct {
	lib nvml.Interface
	mu  sync.Mutex
	// lastSample remembers, per GPU uuid, the newest process utilisation
	// sample seen, so that each read asks NVML only for newer samples.
	lastSample map[string]uint64
	// sm holds, per GPU uuid, each process's last SM sample.
	sm map[string]map[uint32]smSample
	// now is the clock; tests set it.
	now func() time.Time
}

// Open initialises the NVML that an --nvml flag value names (see
// gpumock.Library): the driver's, or a mock of node's GPUs that names the
// same GPUs as the device plugin's mock of that node.
func Open(flag, node string) (*Source, error) {
	lib, err := gpumock.Library(flag, node)
	if err != nil {
		return nil, err
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml init (--nvml=%q): %s", flag, nvml.ErrorString(ret))
	}
	return New(lib), nil
}

// New wraps an initialised NVML library.
func New(lib nvml.Interface) *Source {
	return &Source{lib: lib, lastSample: map[string]uint64{}, sm: map[string]map[uint32]smSample{}, now: time.Now}
}

// Close shuts NVML down.
func (s *Source) Close() {
	s.lib.Shutdown()
}

// Idle fills in the calls go-nvml's mock servers leave unset with an idle
// GPU: no utilisation and no processes. Tests override them to simulate load.
func Idle(srv *server.Server) {
	for _, d := range srv.Devices {
		dev := d.(*server.Device)
		if dev.GetUtilizationRatesFunc == nil {
			dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.SUCCESS }
		}
		if dev.GetComputeRunningProcessesFunc == nil {
			dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
		}
		if dev.GetGraphicsRunningProcessesFunc == nil {
			dev.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
		}
		if dev.GetMPSComputeRunningProcessesFunc == nil {
			dev.GetMPSComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
		}
		if dev.GetProcessUtilizationFunc == nil {
			dev.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
				return nil, nvml.ERROR_NOT_FOUND
			}
		}
	}
}

// Read returns every GPU, ordered by index. A GPU whose identity cannot be
// read is an error; a missing utilisation or process list only blanks that
// part, since older drivers and some boards do not support them.
func (s *Source) Read() ([]GPU, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ret := s.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml device count: %s", nvml.ErrorString(ret))
	}
	out := make([]GPU, 0, n)
	var errs []error
	for i := 0; i < n; i++ {
		g, err := s.read(i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, g)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Index < out[b].Index })
	return out, errors.Join(errs...)
}

func (s *Source) read(i int) (GPU, error) {
	d, ret := s.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("nvml device %d: %s", i, nvml.ErrorString(ret))
	}
	g := GPU{Index: i, UtilizationPercent: -1}
	if g.UUID, ret = d.GetUUID(); ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("nvml device %d uuid: %s", i, nvml.ErrorString(ret))
	}
	if g.Model, ret = d.GetName(); ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("nvml device %d (%s) name: %s", i, g.UUID, nvml.ErrorString(ret))
	}
	mem, ret := d.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("nvml device %d (%s) memory: %s", i, g.UUID, nvml.ErrorString(ret))
	}
	g.MemoryTotalBytes, g.MemoryUsedBytes = mem.Total, mem.Used
	if u, ret := d.GetUtilizationRates(); ret == nvml.SUCCESS {
		g.UtilizationPercent = int(u.Gpu)
	}
	procs, ok := runningProcesses(d)
	if !ok {
		return g, nil
	}
	sm, ok := s.processSM(d, g.UUID)
	g.PerProcessSM = ok
	for _, p := range procs {
		p.SMPercent = sm[p.PID]
		g.Processes = append(g.Processes, p)
	}
	sort.Slice(g.Processes, func(a, b int) bool { return g.Processes[a].PID < g.Processes[b].PID })
	return g, nil
}

// runningProcesses merges NVML's three process lists: compute (CUDA),
// graphics (Vulkan, OpenGL: memory libvgpu never sees) and MPS clients. A
// process on several lists is one process; NVML reports its whole usage on
// each, so the largest figure stands. false when no list could be read.
func runningProcesses(d nvml.Device) ([]Process, bool) {
	byPID := map[uint32]*Process{}
	var order []uint32
	read := false
	for _, list := range []func() ([]nvml.ProcessInfo, nvml.Return){
		d.GetComputeRunningProcesses, d.GetGraphicsRunningProcesses, d.GetMPSComputeRunningProcesses,
	} {
		infos, ret := list()
		if ret != nvml.SUCCESS {
			continue // older drivers lack MPS; some boards report no graphics
		}
		read = true
		for _, in := range infos {
			p, seen := byPID[in.Pid]
			if !seen {
				p = &Process{PID: in.Pid, MemoryUnknown: true}
				byPID[in.Pid] = p
				order = append(order, in.Pid)
			}
			if in.UsedGpuMemory == notAvailable {
				continue
			}
			if p.MemoryUnknown || in.UsedGpuMemory > p.MemoryUsedBytes {
				p.MemoryUsedBytes, p.MemoryUnknown = in.UsedGpuMemory, false
			}
		}
	}
	out := make([]Process, 0, len(order))
	for _, pid := range order {
		out = append(out, *byPID[pid])
	}
	return out, read
}

// notAvailable is NVML_VALUE_NOT_AVAILABLE as an unsigned 64-bit field holds
// it: NVML's answer when it may not say (e.g. no permission on the process).
const notAvailable = ^uint64(0)

// SampleTTL is how long a process's last SM sample stands for it. NVML
// samples every few hundred milliseconds and answers only with samples newer
// than asked for, so a read between two samples must not drop a busy process
// to zero; one that has not run for this long is idle.
const SampleTTL = 2 * time.Second

type smSample struct {
	percent uint32
	at      time.Time
}

// processSM returns the newest SM utilisation of each process of the GPU,
// and false when the GPU cannot sample per process. NVML answers NOT_FOUND
// when no process ran since the last timestamp.
func (s *Source) processSM(d nvml.Device, uuid string) (map[uint32]uint32, bool) {
	now := s.now()
	cache := s.sm[uuid]
	if cache == nil {
		cache = map[uint32]smSample{}
		s.sm[uuid] = cache
	}
	samples, ret := d.GetProcessUtilization(s.lastSample[uuid])
	if ret == nvml.SUCCESS {
		newest := make(map[uint32]uint64, len(samples))
		for _, smp := range samples {
			if smp.TimeStamp >= newest[smp.Pid] {
				newest[smp.Pid] = smp.TimeStamp
				cache[smp.Pid] = smSample{percent: smp.SmUtil, at: now}
			}
			if smp.TimeStamp > s.lastSample[uuid] {
				s.lastSample[uuid] = smp.TimeStamp
			}
		}
	}
	out := make(map[uint32]uint32, len(cache))
	for pid, smp := range cache {
		if now.Sub(smp.at) > SampleTTL {
			delete(cache, pid)
			continue
		}
		out[pid] = smp.percent
	}
	return out, ret == nvml.SUCCESS || ret == nvml.ERROR_NOT_FOUND
}
