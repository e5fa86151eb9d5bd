// Package discovery finds the node's GPUs through NVML and watches their
// health through NVML events. It works the same against the real library and
// against go-nvml's mock servers.
package discovery

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/vgpu-io/vgpu/lib/device"
)

// ErrNoGPU means NVML works but reports no GPU.
var ErrNoGPU = errors.New("NVML reports no GPU on this node")

// Discover lists the GPUs. lib must already be initialised. sysfsRoot is
// where sysfs is mounted ("/sys" on a host), read for each GPU's NUMA node.
func Discover(lib nvml.Interface, sysfsRoot string) ([]device.GPU, error) {
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML DeviceGetCount: %v", ret)
	}
	if n == 0 {
		return nil, ErrNoGPU
	}
	gpus := make([]device.GPU, 0, n)
	for i := 0; i < n; i++ {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("NVML DeviceGetHandleByIndex(%d): %v", i, ret)
		}
		g, err := describe(d, i, sysfsRoot)
		if err != nil {
			return nil, fmt.Errorf("GPU %d: %w", i, err)
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}

func describe(d nvml.Device, i int, sysfsRoot string) (device.GPU, error) {
	uuid, ret := d.GetUUID()
	if ret != nvml.SUCCESS {
		return device.GPU{}, fmt.Errorf("GetUUID: %v", ret)
	}
	name, ret := d.GetName()
	if ret != nvml.SUCCESS {
		return device.GPU{}, fmt.Errorf("%s: GetName: %v", uuid, ret)
	}
	mem, ret := d.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return device.GPU{}, fmt.Errorf("%s: GetMemoryInfo: %v", uuid, ret)
	}
	index := i
	if idx, ret := d.GetIndex(); ret == nvml.SUCCESS {
		index = idx
	}
	numa := -1
	if pci, ret := d.GetPciInfo(); ret == nvml.SUCCESS {
		numa = NUMANode(sysfsRoot, busID(pci.BusId))
	}
	return device.GPU{
		UUID:      uuid,
		Index:     index,
		Model:     name,
		MemoryMiB: int64(mem.Total / (1024 * 1024)),
		NUMANode:  numa,
		Healthy:   true,
	}, nil
}

func busID(raw [32]int8) string {
	var b strings.Builder
	for _, c := range raw {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

// NUMANode reads the NUMA node of a PCI device from sysfs. NVML writes bus
// ids with an 8-digit domain (00000000:07:00.0) where sysfs uses 4 digits
// (0000:07:00.0). Unknown or unreadable is -1, which is also what the kernel
// writes for a device without NUMA affinity.
func NUMANode(sysfsRoot, pciBusID string) int {
	id := strings.ToLower(strings.TrimSpace(pciBusID))
	domain, rest, ok := strings.Cut(id, ":")
	if !ok || rest == "" {
		return -1
	}
	dom, err := strconv.ParseUint(domain, 16, 32)
	if err != nil {
		return -1
	}
	path := filepath.Join(sysfsRoot, "bus", "pci", "devices", fmt.Sprintf("%04x:%s", dom, rest), "numa_node")
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 {
		return -1
	}
	return n
}
