// Package containerspec turns one container's assignment into the container
// contract the kubelet applies (docs/contract.md#container-contract): environment
// for the NVIDIA runtime and libvgpu, and the mounts of libvgpu and of the
// container's region directory.
package containerspec

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/install"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
)

// Host says where things are on the host.
type Host struct {
	// ContainersDir holds the region directories (contract.HostContainersDir).
	ContainersDir string
	// LibDir is the versioned libvgpu directory; "" when libvgpu is not
	// installed, and then the container gets neither the library nor
	// LD_PRELOAD (a preload of a missing file makes every process complain).
	LibDir string
}

// RegionDir is the host directory of one container's shared region.
func (h Host) RegionDir(podUID, container string) string {
	return filepath.Join(h.ContainersDir, contract.ContainerDirName(podUID, container))
}

// Build creates the container's region directory and returns its contract.
func Build(h Host, podUID string, c assign.Container) (*pluginapi.ContainerAllocateResponse, error) {
	if len(c.Devices) == 0 {
		return nil, fmt.Errorf("container %q: assignment lists no devices", c.Name)
	}
	uuids := make([]string, len(c.Devices))
	mem := make([]string, len(c.Devices))
	cores := make([]string, len(c.Devices))
	for i, d := range c.Devices {
		uuids[i] = d.UUID
		mem[i] = strconv.FormatInt(d.MemoryMiB, 10)
		cores[i] = strconv.Itoa(d.Cores)
	}
	region := h.RegionDir(podUID, c.Name)
	if err := os.MkdirAll(region, 0o755); err != nil {
		return nil, fmt.Errorf("create region directory: %w", err)
	}
	// The container may run as any user and libvgpu must create the region
	// file there; MkdirAll's mode is subject to the umask, Chmod is not.
	if err := os.Chmod(region, 0o777); err != nil {
		return nil, fmt.Errorf("region directory %s: %w", region, err)
	}
	resp := &pluginapi.ContainerAllocateResponse{
		Envs: map[string]string{
			contract.EnvVisibleDevices: strings.Join(uuids, ","),
			contract.EnvMemoryLimits:   strings.Join(mem, ","),
			contract.EnvCoreLimits:     strings.Join(cores, ","),
			contract.EnvRegion:         filepath.Join(contract.ContainerRegionDir, contract.RegionFileName),
		},
		Mounts: []*pluginapi.Mount{{
			ContainerPath: contract.ContainerRegionDir,
			HostPath:      region,
		}},
	}
	if h.LibDir != "" {
		resp.Envs[contract.EnvLDPreload] = contract.ContainerLibPath
		resp.Mounts = append(resp.Mounts,
			&pluginapi.Mount{
				ContainerPath: filepath.Dir(contract.ContainerLibPath),
				HostPath:      h.LibDir,
				ReadOnly:      true,
			},
			&pluginapi.Mount{
				ContainerPath: contract.ContainerPreloadPath,
				HostPath:      filepath.Join(h.LibDir, install.PreloadFileName),
				ReadOnly:      true,
			})
	}
	return resp, nil
}
