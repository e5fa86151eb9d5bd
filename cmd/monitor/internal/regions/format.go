package regions

import (
	"fmt"
	"os"
	"runtime/debug"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vgpu-io/vgpu/lib/region"
)

// Decode reads libvgpu's region format (lib/region, docs/shared-region.md).
func Decode(b []byte) (Region, error) {
	r, err := region.Decode(b)
	if err != nil {
		return Region{}, err
	}
	out := Region{Enforced: r.Enforced()}
	if !out.Enforced {
		out.Reason, out.ReasonText = r.Header.Reason.String(), r.Header.ReasonText
	}
	for _, d := range r.VisibleDevices() {
		out.Devices = append(out.Devices, Device{
			UUID:             d.UUID,
			MemoryLimitBytes: d.MemLimit,
			MemoryUsedBytes:  d.MemUsed,
			CoresLimit:       int(d.CoreLimit),
			UnslottedBytes:   d.MemUnslotted,
			SharedBytes:      d.MemShared,
		})
	}
	for _, p := range r.ActiveProcesses() {
		out.Processes = append(out.Processes, Process{PID: p.PID, StartTime: p.StartTime,
			MemoryUsedBytes: append([]uint64(nil), p.MemUsed[:len(out.Devices)]...)})
	}
	return out, nil
}

// Publisher writes utilisation samples into live region files, mapped
// shared for the few stores of each sample.
type Publisher struct{}

// Publish writes one sample for device of the region at path.
func (Publisher) Publish(path string, device int, permille uint32) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	// Touching a mapping past the end of the file would raise SIGBUS.
	if st.Size() < region.Size {
		return fmt.Errorf("%s: %d bytes, a region has %d", path, st.Size(), region.Size)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, region.Size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("%s: mmap: %w", path, err)
	}
	defer func() { _ = syscall.Munmap(mem) }()
	// Any process of the container can truncate the file after the size
	// check: the fault on the mapping is then this sample's error, not a
	// crash of the monitor (docs/contract.md#the-region-file).
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: the file shrank while mapped: %v", path, r)
		}
	}()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return err
	}
	return region.PublishUtil(mem, device, permille, uint64(ts.Nano()))
}
