// Package containerspec turns one container's assignment into the container
// contract the kubelet applies (docs/contract.md): environment for the NVIDIA
// runtime, the limits file libvgpu reads, the container's region (created
// with real blocks), and the mounts of libvgpu, the limits file and the
// region directory.
package containerspec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/install"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/region"
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

// LimitsPath is the host path of one container's limits file.
func (h Host) LimitsPath(podUID, container string) string {
	return contract.HostLimitsPath(h.ContainersDir, podUID, container)
}

// Build creates the container's region directory, region file and limits
// file, and returns its contract. Every host path it returns exists.
func Build(h Host, podUID string, c assign.Container) (*pluginapi.ContainerAllocateResponse, error) {
	if len(c.Devices) == 0 {
		return nil, fmt.Errorf("container %q: assignment lists no devices", c.Name)
	}
	regionPath := filepath.Join(contract.ContainerRegionDir, contract.RegionFileName)
	limits := contract.Limits{Region: regionPath}
	uuids := make([]string, len(c.Devices))
	mem := make([]string, len(c.Devices))
	cores := make([]string, len(c.Devices))
	for i, d := range c.Devices {
		uuids[i] = d.UUID
		mem[i] = strconv.FormatInt(d.MemoryMiB, 10)
		cores[i] = strconv.Itoa(d.Cores)
		limits.Devices = append(limits.Devices, contract.DeviceLimits{UUID: d.UUID, MemoryMiB: d.MemoryMiB, Cores: d.Cores})
	}
	regionDir := h.RegionDir(podUID, c.Name)
	if err := os.MkdirAll(regionDir, 0o755); err != nil {
		return nil, fmt.Errorf("create region directory: %w", err)
	}
	// The container may run as any user and libvgpu must open the region
	// file there; MkdirAll's mode is subject to the umask, Chmod is not.
	if err := os.Chmod(regionDir, 0o777); err != nil {
		return nil, fmt.Errorf("region directory %s: %w", regionDir, err)
	}
	if err := createRegion(filepath.Join(regionDir, contract.RegionFileName)); err != nil {
		return nil, err
	}
	resp := &pluginapi.ContainerAllocateResponse{
		// libvgpu ignores the limit variables when the limits file is
		// mounted; the NVIDIA runtime and people read them.
		Envs: map[string]string{
			contract.EnvVisibleDevices: strings.Join(uuids, ","),
			contract.EnvMemoryLimits:   strings.Join(mem, ","),
			contract.EnvCoreLimits:     strings.Join(cores, ","),
			contract.EnvRegion:         regionPath,
		},
		Mounts: []*pluginapi.Mount{{
			ContainerPath: contract.ContainerRegionDir,
			HostPath:      regionDir,
		}},
	}
	if h.LibDir != "" {
		limitsPath := h.LimitsPath(podUID, c.Name)
		if err := writeLimits(limitsPath, contract.FormatLimits(limits)); err != nil {
			return nil, err
		}
		// The limits file is mounted over this placeholder; a directory
		// installed by an older plugin may lack it.
		if err := ensurePlaceholder(filepath.Join(h.LibDir, contract.LimitsFileName)); err != nil {
			return nil, err
		}
		resp.Envs[contract.EnvLDPreload] = contract.ContainerLibPath
		resp.Mounts = append(resp.Mounts,
			&pluginapi.Mount{
				ContainerPath: filepath.Dir(contract.ContainerLibPath),
				HostPath:      h.LibDir,
				ReadOnly:      true,
			},
			&pluginapi.Mount{
				ContainerPath: contract.ContainerLimitsPath,
				HostPath:      limitsPath,
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

// writeLimits replaces the limits file atomically: a container being
// restarted never reads half of one (docs/contract.md#where-limits-come-from).
func writeLimits(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".limits-")
	if err != nil {
		return fmt.Errorf("limits file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("limits file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("limits file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o444); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("limits file %s: %w", path, err)
	}
	return nil
}

// createRegion writes a region file of region.Size zero bytes, every block
// written, so that a process mapping it can never fault on a full
// filesystem (docs/contract.md#the-region-file). libvgpu initialises its
// header. An existing file is left alone: it holds the ledger of a
// container that is being restarted.
func createRegion(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("region file: %w", err)
	}
	_, err = f.Write(make([]byte, region.Size))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// Any user of the container opens it; OpenFile's mode is subject to the umask.
		err = os.Chmod(path, 0o666)
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("region file %s: %w", path, err)
	}
	return nil
}

func ensurePlaceholder(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("limits placeholder: %w", err)
	}
	return f.Close()
}
