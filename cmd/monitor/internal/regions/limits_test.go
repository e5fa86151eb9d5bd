package regions

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/region"
)

// A process of the container zeroed the limits in its region: the monitor
// still reports, and feeds by, the limits the node agent wrote.
func TestLimitsComeFromTheHostFileNotTheRegion(t *testing.T) {
	dir := t.TempDir()
	r := region.Region{}
	r.Header.Magic, r.Header.Version, r.Header.Size = region.Magic, region.Version, region.Size
	r.Header.HeaderSize, r.Header.DeviceSize, r.Header.ProcSize = region.HeaderSize, region.DeviceSize, region.ProcessSize
	r.Header.ProcessCapacity, r.Header.DeviceCount = region.MaxProcesses, 1
	r.Devices[0].UUID, r.Devices[0].MemUsed = "GPU-a", 300<<20 // MemLimit and CoreLimit zeroed
	e := writeRegion(t, dir, "uid_main", string(r.Encode()))
	reader := NewReader(Decode, zap.NewNop())

	got, st := reader.Read(e)
	if st != OK || len(got.Devices) != 1 || got.Devices[0].MemoryLimitBytes != 0 {
		t.Fatalf("without a limits file the region's copy is reported: %v %+v", st, got)
	}
	lim := contract.FormatLimits(contract.Limits{Region: "/var/run/vgpu/region",
		Devices: []contract.DeviceLimits{{UUID: "GPU-a", MemoryMiB: 1024, Cores: 30}}})
	if err := os.WriteFile(filepath.Join(dir, "uid_main.limits"), lim, 0o444); err != nil {
		t.Fatal(err)
	}
	got, st = reader.Read(e)
	if st != OK || len(got.Devices) != 1 {
		t.Fatalf("read: %v %+v", st, got)
	}
	if d := got.Devices[0]; d.MemoryLimitBytes != 1024<<20 || d.CoresLimit != 30 || d.MemoryUsedBytes != 300<<20 || d.UUID != "GPU-a" {
		t.Errorf("device %+v, want the file's 1024 MiB and 30 %% with the region's 300 MiB used", d)
	}
}
