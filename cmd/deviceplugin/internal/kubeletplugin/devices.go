package kubeletplugin

import (
	"fmt"
	"strings"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
)

// idSeparator separates the GPU uuid from the slot number in a device id.
const idSeparator = "::"

// DeviceID is the kubelet device id of one vGPU slot of a GPU.
func DeviceID(uuid string, slot int) string {
	return fmt.Sprintf("%s%s%d", uuid, idSeparator, slot)
}

// GPUOf is the GPU uuid of a device id.
func GPUOf(id string) string {
	uuid, _, _ := strings.Cut(id, idSeparator)
	return uuid
}

// Devices lists splitCount device ids per GPU, with the GPU's health and
// NUMA node: the kubelet's allocatable nvidia.com/gpu is the healthy ones.
func Devices(sn gpustate.Snapshot) []*pluginapi.Device {
	out := make([]*pluginapi.Device, 0, len(sn.GPUs)*sn.Settings.DeviceSplitCount)
	for _, g := range sn.GPUs {
		health := pluginapi.Healthy
		if !g.Healthy {
			health = pluginapi.Unhealthy
		}
		var topo *pluginapi.TopologyInfo
		if g.NUMANode >= 0 {
			topo = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(g.NUMANode)}}}
		}
		for i := 0; i < sn.Settings.DeviceSplitCount; i++ {
			out = append(out, &pluginapi.Device{ID: DeviceID(g.UUID, i), Health: health, Topology: topo})
		}
	}
	return out
}

// uniqueGPUs is the GPUs of device ids, in first-seen order.
func uniqueGPUs(ids []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, id := range ids {
		g := GPUOf(id)
		if !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	return out
}

// preferred picks size ids from available: those the kubelet must include,
// then one on each wanted GPU, then ids on GPUs not yet used, then any.
func preferred(available, mustInclude, wanted []string, size int) []string {
	chosen := make([]string, 0, size)
	used := map[string]bool{}
	gpuUsed := map[string]bool{}
	take := func(id string) {
		if len(chosen) < size && !used[id] {
			chosen = append(chosen, id)
			used[id] = true
			gpuUsed[GPUOf(id)] = true
		}
	}
	for _, id := range mustInclude {
		take(id)
	}
	for _, g := range wanted {
		if gpuUsed[g] {
			continue
		}
		for _, id := range available {
			if GPUOf(id) == g {
				take(id)
				break
			}
		}
	}
	for _, id := range available {
		if !gpuUsed[GPUOf(id)] {
			take(id)
		}
	}
	for _, id := range available {
		take(id)
	}
	return chosen
}
