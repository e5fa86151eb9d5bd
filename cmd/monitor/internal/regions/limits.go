package regions

import (
	"os"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// LimitsPath is the container's limits file on the host, beside its region
// directory (docs/contract.md#where-limits-come-from).
func (e Entry) LimitsPath() string { return e.Dir + contract.HostLimitsSuffix }

// withHostLimits reports the limits of the container's limits file, which
// the container cannot write, instead of the region's copy, which any of its
// processes can: libvgpu enforces the file's, and so the monitor shows and
// feeds by them. Devices are in the same order in both. Without a readable
// file (a region of a process that took its limits from the environment)
// the region's copy is all there is.
func withHostLimits(e Entry, r Region) Region {
	b, err := os.ReadFile(e.LimitsPath())
	if err != nil {
		return r
	}
	l, err := contract.ParseLimits(b)
	if err != nil {
		return r
	}
	devs := make([]Device, len(l.Devices))
	for i, d := range l.Devices {
		if i < len(r.Devices) {
			devs[i] = r.Devices[i] // the usage libvgpu recorded
		}
		devs[i].UUID, devs[i].MemoryLimitBytes, devs[i].CoresLimit = d.UUID, uint64(d.MemoryMiB)<<20, d.Cores
	}
	r.Devices = devs
	return r
}
