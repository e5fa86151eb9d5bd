// Package gpumock is vgpu's one simulated GPU catalogue: the NVML that
// `--nvml=mock:<model>[:<count>]` runs against in the device plugin and the
// monitor, and the GPUs of the test harness's simulated nodes. It is one of
// go-nvml's mock servers (pkg/nvml/mock), completed with what vgpu needs and
// the mock leaves out: PCI bus ids, an idle utilisation and process list,
// an event set into which tests and demos inject Xid errors, and uuids
// derived from the node name and the GPU index, so that every binary that
// simulates a node's GPUs names the same GPUs, across restarts too.
package gpumock

import (
	"crypto/sha256"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxb200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// models maps a model name to the mock GPU it builds. The dgx* names are
// go-nvml's 8-GPU systems; the others name a single GPU type.
var models = map[string]gpus.Config{
	"dgxa100":    gpus.A100_SXM4_40GB,
	"dgxh100":    gpus.H100_SXM5_80GB,
	"dgxh200":    gpus.H200_SXM5_141GB,
	"dgxb200":    gpus.B200_SXM5_180GB,
	"a100-40gb":  gpus.A100_PCIE_40GB,
	"a100-80gb":  gpus.A100_SXM4_80GB,
	"a30":        gpus.A30_PCIE_24GB,
	"h100-80gb":  gpus.H100_SXM5_80GB,
	"h200-141gb": gpus.H200_SXM5_141GB,
	"b200":       gpus.B200_SXM5_180GB,
	// go-nvml ships no Turing mock; the T4 is the commonest inference GPU,
	// so it is described here from its public data sheet.
	"t4": {
		Name:         "Tesla T4",
		Architecture: nvml.DEVICE_ARCH_TURING,
		Brand:        nvml.BRAND_TESLA,
		MemoryMB:     15360,
		CudaMajor:    7,
		CudaMinor:    5,
		PciDeviceId:  0x1EB810DE,
	},
}

// aliases are the monitor's former model names (before one catalogue served
// both binaries), kept so that existing manifests keep working.
var aliases = map[string]string{"a100": "dgxa100", "h100": "dgxh100", "h200": "dgxh200"}

// Models lists the accepted model names.
func Models() []string {
	out := make([]string, 0, len(models))
	for m := range models {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// Config returns the mock configuration of a model: its name, memory and
// architecture as NVML reports them.
func Config(model string) (gpus.Config, bool) {
	c, ok := models[canonical(model)]
	return c, ok
}

func canonical(model string) string {
	m := strings.ToLower(strings.TrimSpace(model))
	if a, ok := aliases[m]; ok {
		return a
	}
	return m
}

// FlagUsage describes the values of the --nvml flag, for its help text.
var FlagUsage = "NVML to use: empty or \"real\" for the driver's libnvidia-ml.so.1, or mock:<model>[:<count>] " +
	"for a simulated node with go-nvml's mock (count defaults to 8; models: " + strings.Join(Models(), ", ") + ")"

// Library returns the NVML an --nvml flag value names, not yet initialised:
// the driver's library for "" or "real", a mock of node's GPUs for
// "mock:<model>[:<count>]".
func Library(flag, node string) (nvml.Interface, error) {
	if flag == "" || flag == "real" {
		return nvml.New(), nil
	}
	m, ok := strings.CutPrefix(flag, "mock:")
	if !ok {
		return nil, fmt.Errorf("--nvml=%q: must be empty or \"real\" (the driver's NVML), or mock:<model>[:<count>] with a model among %s",
			flag, strings.Join(Models(), ", "))
	}
	spec, err := ParseSpec(m)
	if err != nil {
		return nil, fmt.Errorf("--nvml=%s: %w", flag, err)
	}
	return New(spec, node), nil
}

// Server is a mock NVML with injectable health events.
type Server struct {
	*server.Server
	events chan nvml.EventData

	mu         sync.Mutex
	registered map[*server.Device]uint64
}

// Spec is a parsed `mock:<model>[:<count>]` value (without "mock:").
type Spec struct {
	Model string
	Count int
}

// ParseSpec parses "<model>[:<count>]"; count defaults to 8, as in a DGX.
func ParseSpec(s string) (Spec, error) {
	model, count, hasCount := strings.Cut(s, ":")
	model = canonical(model)
	if _, ok := models[model]; !ok {
		return Spec{}, fmt.Errorf("mock model %q is unknown: the models are %s", model, strings.Join(Models(), ", "))
	}
	n := 8
	if hasCount {
		v, err := strconv.Atoi(count)
		if err != nil || v < 1 || v > 64 {
			return Spec{}, fmt.Errorf("mock GPU count %q: must be an integer from 1 to 64", count)
		}
		n = v
	}
	return Spec{Model: model, Count: n}, nil
}

// New builds a mock with spec's GPUs. node (the node's name) makes the
// uuids stable across restarts, as real uuids are, the same in every binary
// that simulates that node, and distinct between simulated nodes:
// assignments written before a restart must still name GPUs that exist
// after it, and the monitor must name the GPUs the device plugin published.
func New(spec Spec, node string) *Server {
	spec.Model = canonical(spec.Model)
	cfg := models[spec.Model]
	var base *server.Server
	// Build through the dgx packages where one matches, so the driver and
	// CUDA versions are the ones go-nvml gives those systems.
	switch spec.Model {
	case "dgxa100":
		base = dgxa100.NewWithGPUs(gpus.Multiple(spec.Count, cfg)...)
	case "dgxh100":
		base = dgxh100.NewWithGPUs(gpus.Multiple(spec.Count, cfg)...)
	case "dgxh200":
		base = dgxh200.NewWithGPUs(gpus.Multiple(spec.Count, cfg)...)
	case "dgxb200":
		base = dgxb200.NewWithGPUs(gpus.Multiple(spec.Count, cfg)...)
	default:
		base = dgxa100.NewWithGPUs(gpus.Multiple(spec.Count, cfg)...)
	}
	s := &Server{Server: base, events: make(chan nvml.EventData, 64), registered: map[*server.Device]uint64{}}
	for i, d := range base.Devices {
		dev := d.(*server.Device)
		dev.UUID = UUID(node, i)
		s.complete(dev)
	}
	base.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		return &mock.EventSet{
			WaitFunc: s.wait,
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
		}, nvml.SUCCESS
	}
	return s
}

func (s *Server) complete(dev *server.Device) {
	dev.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		p := nvml.PciInfo{PciDeviceId: dev.Config.PciDeviceId}
		// NVML's own format: 8-digit domain.
		id := "0000" + dev.PciBusID
		for i := 0; i < len(id) && i < len(p.BusId)-1; i++ {
			p.BusId[i] = int8(id[i])
		}
		return p, nvml.SUCCESS
	}
	// An idle GPU: no utilisation and no processes. Tests override these
	// to simulate load.
	dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.SUCCESS }
	dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
	dev.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
	dev.GetMPSComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
	dev.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		return nil, nvml.ERROR_NOT_FOUND
	}
	dev.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
		return nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeSingleBitEccError, nvml.SUCCESS
	}
	dev.RegisterEventsFunc = func(types uint64, _ nvml.EventSet) nvml.Return {
		s.mu.Lock()
		s.registered[dev] |= types
		s.mu.Unlock()
		return nvml.SUCCESS
	}
}

func (s *Server) wait(timeoutMillis uint32) (nvml.EventData, nvml.Return) {
	select {
	case e := <-s.events:
		return e, nvml.SUCCESS
	case <-time.After(time.Duration(timeoutMillis) * time.Millisecond):
		return nvml.EventData{}, nvml.ERROR_TIMEOUT
	}
}

// InjectXid raises a critical Xid error on the GPU with this index, as the
// driver would. It fails if nobody registered for Xid events on that GPU,
// so a test cannot pass by injecting into the void.
func (s *Server) InjectXid(index int, xid uint64) error {
	if index < 0 || index >= len(s.Devices) {
		return fmt.Errorf("mock GPU index %d: the mock has %d GPUs", index, len(s.Devices))
	}
	dev := s.Devices[index].(*server.Device)
	s.mu.Lock()
	types := s.registered[dev]
	s.mu.Unlock()
	if types&nvml.EventTypeXidCriticalError == 0 {
		return fmt.Errorf("mock GPU %d: nobody registered for Xid events", index)
	}
	s.events <- nvml.EventData{Device: dev, EventType: nvml.EventTypeXidCriticalError, EventData: xid}
	return nil
}

// UUID is the uuid of the GPU with this index.
func (s *Server) UUID(index int) string {
	return s.Devices[index].(*server.Device).UUID
}

// UUID is the uuid of the simulated GPU with this index on node.
func UUID(node string, index int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("vgpu-mock/%s/%d", node, index)))
	h[6] = (h[6] & 0x0f) | 0x50 // name-based, like an RFC 4122 version 5 uuid
	h[8] = (h[8] & 0x3f) | 0x80
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}
