package containerspec

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/install"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/region"
)

func host(t *testing.T) Host {
	root := t.TempDir()
	src := filepath.Join(root, "libvgpu.so")
	if err := os.WriteFile(src, []byte("a build"), 0o644); err != nil {
		t.Fatal(err)
	}
	lib, err := install.Install(src, filepath.Join(root, "lib"), "v1")
	if err != nil {
		t.Fatal(err)
	}
	return Host{ContainersDir: filepath.Join(root, "containers"), LibDir: lib}
}

var trainer = assign.Container{Name: "trainer", Devices: []assign.Device{
	{UUID: "GPU-53d3cc95-abf9-5e2e-bf83-201ef0cbe341", MemoryMiB: 20480, Cores: 50},
	{UUID: "GPU-71628091-1ca1-569f-af33-093d21b3c0ac", MemoryMiB: 4096, Cores: 0},
}}

func mounts(r *pluginapi.ContainerAllocateResponse) map[string]*pluginapi.Mount {
	m := map[string]*pluginapi.Mount{}
	for _, x := range r.Mounts {
		m[x.ContainerPath] = x
	}
	return m
}

// The limits every process of the container reads come from a file the
// container cannot write: written here, mounted read-only beside libvgpu.
func TestBuildWritesReadOnlyLimitsFile(t *testing.T) {
	h := host(t)
	r, err := Build(h, "uid-1", trainer)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h.ContainersDir, "uid-1_trainer.limits")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("limits file: %v", err)
	}
	l, err := contract.ParseLimits(b)
	if err != nil {
		t.Fatalf("limits file does not parse: %v\n%s", err, b)
	}
	if len(l.Devices) != 2 || l.Devices[0] != (contract.DeviceLimits{UUID: trainer.Devices[0].UUID, MemoryMiB: 20480, Cores: 50}) ||
		l.Devices[1].MemoryMiB != 4096 || l.Region != "/var/run/vgpu/region" {
		t.Errorf("limits file says %+v", l)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o444 {
		t.Errorf("limits file mode %v, want 0444", st.Mode().Perm())
	}
	m := mounts(r)[contract.ContainerLimitsPath]
	if m == nil || m.HostPath != path || !m.ReadOnly {
		t.Fatalf("limits mount %v, want %s read-only at %s", m, path, contract.ContainerLimitsPath)
	}
	if filepath.Dir(m.ContainerPath) != filepath.Dir(contract.ContainerLibPath) {
		t.Errorf("limits file at %s: libvgpu looks for it beside itself, %s", m.ContainerPath, contract.ContainerLibPath)
	}
	// It is mounted over a file inside the read-only library mount, which
	// must therefore come first (a runtime that keeps the order would
	// otherwise hide the limits file under the library directory) and hold
	// the file to mount over.
	lib, lim := -1, -1
	for i, x := range r.Mounts {
		switch x.ContainerPath {
		case filepath.Dir(contract.ContainerLibPath):
			lib = i
		case contract.ContainerLimitsPath:
			lim = i
		}
	}
	if lib < 0 || lib > lim {
		t.Errorf("mounts %v: the library directory must come before the limits file inside it", r.Mounts)
	}
	if st, err := os.Stat(filepath.Join(h.LibDir, contract.LimitsFileName)); err != nil || st.Size() != 0 {
		t.Errorf("placeholder in the library directory: %v, %v", st, err)
	}
	// The limits file is never reachable through the read-write region mount.
	rw := mounts(r)[contract.ContainerRegionDir]
	if rel, err := filepath.Rel(rw.HostPath, path); err == nil && rel[0] != '.' {
		t.Errorf("limits file %s is inside the read-write region directory %s", path, rw.HostPath)
	}
	for _, x := range r.Mounts {
		if _, err := os.Stat(x.HostPath); err != nil {
			t.Errorf("mount %s: host path %s does not exist", x.ContainerPath, x.HostPath)
		}
	}

	// A second Allocate for the same container (a restart) gets the new limits.
	trainer2 := trainer
	trainer2.Devices = []assign.Device{{UUID: trainer.Devices[0].UUID, MemoryMiB: 1024, Cores: 10}}
	if _, err := Build(h, "uid-1", trainer2); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if l, err := contract.ParseLimits(b); err != nil || len(l.Devices) != 1 || l.Devices[0].MemoryMiB != 1024 {
		t.Errorf("rewritten limits file: %+v, %v", l, err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(h.ContainersDir, ".tmp-*"))
	more, _ := filepath.Glob(filepath.Join(h.ContainersDir, "*", ".tmp-*"))
	leftovers = append(leftovers, more...)
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

// The region is created with every block written, so that mapping it can
// never fault on a full filesystem; an existing one keeps its ledger.
func TestBuildPreCreatesRegion(t *testing.T) {
	h := host(t)
	if _, err := Build(h, "uid-2", trainer); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h.ContainersDir, "uid-2_trainer", contract.RegionFileName)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != region.Size || st.Mode().Perm() != 0o666 {
		t.Fatalf("region file: %d bytes mode %v, want %d bytes 0666", st.Size(), st.Mode().Perm(), region.Size)
	}
	if blocks := allocatedBytes(t, path); blocks < region.Size {
		t.Errorf("region file has %d bytes of blocks for %d bytes: sparse, a full filesystem would fault", blocks, region.Size)
	}
	b, _ := os.ReadFile(path)
	if !bytes.Equal(b, make([]byte, region.Size)) {
		t.Error("a new region must be zeros, for libvgpu to initialise")
	}
	ledger := bytes.Repeat([]byte{7}, region.Size)
	if err := os.WriteFile(path, ledger, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(h, "uid-2", trainer); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, ledger) {
		t.Error("Allocate for an existing container overwrote its region")
	}
}

func TestBuildWithoutLibvgpuMountsNoLimits(t *testing.T) {
	h := host(t)
	h.LibDir = ""
	r, err := Build(h, "uid-3", trainer)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Mounts) != 1 || r.Envs[contract.EnvLDPreload] != "" {
		t.Errorf("without libvgpu: mounts %v envs %v", r.Mounts, r.Envs)
	}
}

// A library file the runtime once made an empty directory of, or one that is
// gone: Build refuses, naming the path, and creates nothing.
func TestBuildRefusesAMissingLibrary(t *testing.T) {
	for _, name := range []string{install.LibFileName(), install.PreloadFileName} {
		h := host(t)
		path := filepath.Join(h.LibDir, name)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := Build(h, "uid-1", trainer)
		if !errors.Is(err, ErrLibMissing) || !strings.Contains(err.Error(), path+" is a directory, not a file") {
			t.Errorf("%s a directory: %v", name, err)
		}
		os.Remove(path)
		_, err = Build(h, "uid-1", trainer)
		if !errors.Is(err, ErrLibMissing) || !strings.Contains(err.Error(), path+": no such file or directory") {
			t.Errorf("%s gone: %v", name, err)
		}
		if _, err := os.Stat(h.ContainersDir); !os.IsNotExist(err) {
			t.Errorf("%s: Build created %s: %v", name, h.ContainersDir, err)
		}
	}
}
