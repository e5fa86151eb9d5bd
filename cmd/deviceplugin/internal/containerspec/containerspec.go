// Package containerspec turns one container's assignment into the container
// contract the kubelet applies (docs/contract.md#container-contract):
// environment for the NVIDIA runtime, the limits file libvgpu reads, the
// container's region (created with real blocks), and the mounts of libvgpu,
// the limits file and the region directory.
package containerspec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

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
	// Keeper, when set, installs libvgpu again where CheckLib finds it
	// damaged, before a container is given it.
	Keeper *LibKeeper
}

// RegionDir is the host directory of one container's shared region.
func (h Host) RegionDir(podUID, container string) string {
	return filepath.Join(h.ContainersDir, contract.ContainerDirName(podUID, container))
}

// LimitsPath is the host path of one container's limits file.
func (h Host) LimitsPath(podUID, container string) string {
	return contract.HostLimitsPath(h.ContainersDir, podUID, container)
}

// Mount is one bind mount of the contract.
type Mount struct {
	ContainerPath string
	HostPath      string
	ReadOnly      bool
}

// Spec is the container contract in a form both paths translate: the
// device plugin's Allocate response and the DRA path's CDI container edits
// (docs/contract.md).
type Spec struct {
	Env    map[string]string
	Mounts []Mount
}

// Build creates the container's region directory, region file and limits
// file, and returns its contract. Every host path it returns exists.
func Build(h Host, podUID string, c assign.Container) (*pluginapi.ContainerAllocateResponse, error) {
	if len(c.Devices) == 0 {
		return nil, fmt.Errorf("container %q: assignment lists no devices", c.Name)
	}
	spec, err := Prepare(h, contract.ContainerDirName(podUID, c.Name), c.Devices)
	if err != nil {
		return nil, err
	}
	resp := &pluginapi.ContainerAllocateResponse{Envs: spec.Env}
	for _, m := range spec.Mounts {
		resp.Mounts = append(resp.Mounts, &pluginapi.Mount{ContainerPath: m.ContainerPath, HostPath: m.HostPath, ReadOnly: m.ReadOnly})
	}
	return resp, nil
}

// Prepare creates the region directory dirName under h.ContainersDir, its
// region file and the limits file beside it for devices, and returns the
// contract. Every host path it returns exists. Preparing the same thing
// twice gives the same result and keeps the region (its ledger).
func Prepare(h Host, dirName string, devices []assign.Device) (Spec, error) {
	if len(devices) == 0 {
		return Spec{}, fmt.Errorf("%s: no devices", dirName)
	}
	// Before anything is created: a refused container leaves nothing behind.
	if err := h.checkLib(); err != nil {
		return Spec{}, err
	}
	limits := contract.Limits{Region: filepath.Join(contract.ContainerRegionDir, contract.RegionFileName)}
	for _, d := range devices {
		limits.Devices = append(limits.Devices, contract.DeviceLimits{UUID: d.UUID, MemoryMiB: d.MemoryMiB, Cores: d.Cores})
	}
	regionDir := filepath.Join(h.ContainersDir, dirName)
	if err := os.MkdirAll(regionDir, 0o755); err != nil {
		return Spec{}, fmt.Errorf("create region directory: %w", err)
	}
	// The container may run as any user and libvgpu must open the region
	// file there; MkdirAll's mode is subject to the umask, Chmod is not.
	if err := os.Chmod(regionDir, 0o777); err != nil {
		return Spec{}, fmt.Errorf("region directory %s: %w", regionDir, err)
	}
	if err := createRegion(filepath.Join(regionDir, contract.RegionFileName)); err != nil {
		return Spec{}, err
	}
	spec := Spec{
		// libvgpu ignores the limit variables when the limits file is
		// mounted; the NVIDIA runtime and people read them.
		Env:    limits.Env(),
		Mounts: []Mount{{ContainerPath: contract.ContainerRegionDir, HostPath: regionDir}},
	}
	if h.LibDir != "" {
		limitsPath := regionDir + contract.HostLimitsSuffix
		if err := writeLimits(limitsPath, contract.FormatLimits(limits)); err != nil {
			return Spec{}, err
		}
		if err := ensurePlaceholder(filepath.Join(h.LibDir, contract.LimitsFileName)); err != nil {
			return Spec{}, err
		}
		spec.Env[contract.EnvLDPreload] = contract.ContainerLibPath
		spec.Mounts = append(spec.Mounts,
			Mount{ContainerPath: filepath.Dir(contract.ContainerLibPath), HostPath: h.LibDir, ReadOnly: true},
			Mount{ContainerPath: contract.ContainerLimitsPath, HostPath: limitsPath, ReadOnly: true},
			Mount{ContainerPath: contract.ContainerPreloadPath, HostPath: filepath.Join(h.LibDir, install.PreloadFileName), ReadOnly: true})
	}
	return spec, nil
}

// ErrLibMissing means a file of the installed libvgpu is gone from the host.
var ErrLibMissing = errors.New("libvgpu is missing on the host")

// CheckLib checks that the installed libvgpu's files are on the host as a
// container that mounts them loads them (install.Check); "" (not
// installed) passes. A container runtime makes a missing mount source an
// empty directory and starts the container anyway, and ld.so skips a
// library it cannot load with a warning: libvgpu would be silently absent
// (docs/contract.md#allocate).
func CheckLib(libDir string) error {
	if libDir == "" {
		return nil
	}
	if err := install.Check(libDir); err != nil {
		return fmt.Errorf("%w: %v", ErrLibMissing, err)
	}
	return nil
}

// LibKeeper puts back the installed libvgpu, which the node agent installed
// at start and something damaged since, so that the next container gets it
// (docs/deviceplugin.md#libvgpu-installation); both paths share it.
type LibKeeper struct {
	// Reinstall installs libvgpu again from the device plugin's image.
	Reinstall func() error
	// Reinstalled hears what was wrong once a reinstall mended it.
	Reinstalled func(damage error)

	// mu makes one container at a time reinstall it.
	mu sync.Mutex
}

func (h Host) checkLib() error {
	damage := CheckLib(h.LibDir)
	if damage == nil || h.Keeper == nil || h.Keeper.Reinstall == nil {
		return damage
	}
	k := h.Keeper
	k.mu.Lock()
	defer k.mu.Unlock()
	if CheckLib(h.LibDir) == nil {
		return nil // another container's reinstall put it back
	}
	if err := k.Reinstall(); err != nil {
		return fmt.Errorf("%w; reinstalling it from the device plugin's image failed: %v", damage, err)
	}
	if err := CheckLib(h.LibDir); err != nil {
		return fmt.Errorf("%w; reinstalled it from the device plugin's image, and still: %v", damage, err)
	}
	if k.Reinstalled != nil {
		k.Reinstalled(damage)
	}
	return nil
}

// Remove deletes what Prepare created for dirName; what is already gone is
// not an error.
func Remove(h Host, dirName string) error {
	regionDir := filepath.Join(h.ContainersDir, dirName)
	if err := os.RemoveAll(regionDir); err != nil {
		return fmt.Errorf("remove region directory %s: %w", regionDir, err)
	}
	if err := os.Remove(regionDir + contract.HostLimitsSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove limits file: %w", err)
	}
	return nil
}

// WriteFile replaces path with data whole, never half written.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return publish(path, data, mode, true)
}

// publish puts data at path whole or not at all: written to a temporary
// file, synced, given its mode (not subject to the umask), then renamed over
// path (replace) or linked to it only if path does not exist yet. A reader,
// or a crash, never meets half a file.
func publish(path string, data []byte, mode os.FileMode, replace bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), mode)
	}
	if err != nil {
		return err
	}
	if replace {
		return os.Rename(tmp.Name(), path)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// writeLimits replaces the limits file: a container restarted later mounts
// the new one; a running one keeps the file it mounted
// (docs/contract.md#where-limits-come-from).
func writeLimits(path string, data []byte) error {
	if err := publish(path, data, 0o444, true); err != nil {
		return fmt.Errorf("limits file %s: %w", path, err)
	}
	return nil
}

// createRegion writes a region file of region.Size zero bytes, every block
// written, so that a process mapping it can never fault on a full
// filesystem (docs/contract.md#the-region-file); libvgpu initialises its
// header. An existing file is left alone: it holds the ledger of a
// container that is being restarted. Mode 0666: any user of the container
// opens it.
func createRegion(path string) error {
	if err := publish(path, make([]byte, region.Size), 0o666, false); err != nil {
		return fmt.Errorf("region file %s: %w", path, err)
	}
	return nil
}

// ensurePlaceholder creates the empty file the limits file is mounted over,
// in a library directory installed by an older plugin that lacks it.
func ensurePlaceholder(path string) error {
	if err := publish(path, nil, 0o444, false); err != nil {
		return fmt.Errorf("limits placeholder %s: %w", path, err)
	}
	return nil
}
