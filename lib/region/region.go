// Package region is the Go declaration of the shared region: the small file
// through which libvgpu (every process of a container) and the node monitor
// share a container's limits, usage and utilisation feed. The layout is
// specified in docs/shared-region.md and declared in C in
// libvgpu/include/vgpu_region.h; region_test.go proves both agree byte for
// byte. This package only encodes and decodes bytes; callers do the file I/O.
package region

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Layout constants, as in vgpu_region.h.
const (
	Magic        uint32 = 0x55504756 // "VGPU" in file byte order
	Version      uint32 = 2
	MaxDevices          = 16
	MaxProcesses        = 1024
	MaxShared           = 256 // exported VMM allocations held container-wide
	UUIDLen             = 48
	ReasonLen           = 128

	HeaderSize      = 256
	DeviceSize      = 256
	ProcessSize     = 16 + 8*MaxDevices
	SharedSize      = 32 + 8*(MaxProcesses/64)
	DevicesOffset   = HeaderSize
	ProcessesOffset = DevicesOffset + MaxDevices*DeviceSize
	SharedOffset    = ProcessesOffset + MaxProcesses*ProcessSize
	// Size is the size of a region file.
	Size = SharedOffset + MaxShared*SharedSize
)

// Header.Flags bits.
const FlagUnenforced uint32 = 1

// Reason says why libvgpu could not enforce a container's limits.
type Reason uint32

// Reasons, as enum vgpu_reason.
const (
	ReasonNone           Reason = 0
	ReasonBadEnv         Reason = 1
	ReasonDriverUnknown  Reason = 2
	ReasonNoDlsym        Reason = 3
	ReasonNoDriverSymbol Reason = 4
	ReasonNoUtilFeed     Reason = 5
	// ReasonUnlimitedDevice: a GPU the process sees has no entry in the
	// container's limits (docs/contract.md#malformed-lists-and-devices-without-a-limit).
	ReasonUnlimitedDevice Reason = 6
	ReasonUncountedAlloc  Reason = 7
)

func (r Reason) String() string {
	switch r {
	case ReasonNone:
		return "none"
	case ReasonBadEnv:
		return "bad-env"
	case ReasonDriverUnknown:
		return "driver-unknown"
	case ReasonNoDlsym:
		return "no-dlsym"
	case ReasonNoDriverSymbol:
		return "no-driver-symbol"
	case ReasonNoUtilFeed:
		return "no-util-feed"
	case ReasonUnlimitedDevice:
		return "unlimited-device"
	case ReasonUncountedAlloc:
		return "uncounted-alloc"
	}
	return fmt.Sprintf("reason-%d", uint32(r))
}

// Process slot states (the low byte of Process.State).
const (
	ProcFree       uint32 = 0
	ProcActive     uint32 = 1
	ProcReclaiming uint32 = 2
	// ProcCounted is or'ed with ProcActive when the process counts in Header.LiveSem.
	ProcCounted uint32 = 0x100
)

// Byte offsets of the fields, from the start of their struct.
const (
	offMagic           = 0
	offVersion         = 4
	offSize            = 8
	offHeaderSize      = 12
	offDeviceSize      = 16
	offProcessSize     = 20
	offDeviceCount     = 24
	offProcessCapacity = 28
	offFlags           = 32
	offReason          = 36
	offCreatedNs       = 40
	offLiveSem         = 48
	offAttached        = 52
	offUnslotted       = 56
	offSharedCapacity  = 60
	offReasonText      = 64
	offSharedSeq       = 192

	devUUID          = 0
	devMemLimit      = 48
	devCoreLimit     = 56
	devMemUsed       = 64
	devMemPeak       = 72
	devAllocFailures = 80
	devMemUnslotted  = 88
	devMemShared     = 96
	devUtilSeq       = 128
	devUtilTimeNs    = 136
	devUtilPermille  = 144
	devUtilBusyNs    = 152
	devBusyTatNs     = 160
	devTatNs         = 192
	devIntervalNs    = 200
	devLaunches      = 208
	devSeenSeq       = 216
	devSeenLaunches  = 224
	devSeenTimeNs    = 232
	devThrottledNs   = 240
	devSeenBusyNs    = 248

	procPID       = 0
	procState     = 4
	procStartTime = 8
	procMemUsed   = 16

	shKey     = 0
	shSize    = 8
	shDevice  = 16
	shHolders = 20
	shSeq     = 24
	shSlots   = 32
)

// Header is the start of the file.
type Header struct {
	Magic, Version, Size             uint32
	HeaderSize, DeviceSize, ProcSize uint32
	DeviceCount, ProcessCapacity     uint32
	Flags                            uint32
	Reason                           Reason
	CreatedNs                        uint64 // CLOCK_REALTIME at creation
	LiveSem                          int32  // SysV semaphore id + 1 counting live processes, 0 = none
	Attached                         uint32 // slots whose process counts in LiveSem
	Unslotted                        uint32 // processes that found every slot taken (ever)
	SharedCapacity                   uint32
	SharedSeq                        uint32 // exports published so far (Shared.Seq)
	ReasonText                       string
}

// Device is one visible device of the container, in NVIDIA_VISIBLE_DEVICES order.
type Device struct {
	UUID          string
	MemLimit      uint64 // bytes, 0 = no limit
	CoreLimit     uint32 // percent of SMs, 0 = no limit
	MemUsed       uint64 // bytes held by all processes of the container
	MemPeak       uint64
	AllocFailures uint64 // allocations refused for the limit
	MemUnslotted  uint64 // part of MemUsed held by processes without a slot
	MemShared     uint64 // part of MemUsed held in Shared (exported VMM memory)

	// The utilisation feed, written by the monitor (see PublishUtil).
	UtilSeq      uint64
	UtilTimeNs   uint64 // CLOCK_MONOTONIC at the end of the sample
	UtilPermille uint32
	UtilBusyNs   uint64 // busy time summed over every sample (PublishUtil keeps it)
	BusyTatNs    uint64 // libvgpu: when the container's measured GPU time is paid off

	// libvgpu's launch pacing state.
	TatNs, IntervalNs, Launches       uint64
	SeenSeq, SeenLaunches, SeenTimeNs uint64
	ThrottledNs                       uint64 // total delay added to launches
	SeenBusyNs                        uint64 // UtilBusyNs of the last applied sample
}

// Process is one process slot.
type Process struct {
	PID       int32  // in the container's pid namespace
	State     uint32 // ProcFree, ProcActive (| ProcCounted), ProcReclaiming
	StartTime uint64 // field 22 of /proc/<pid>/stat
	MemUsed   [MaxDevices]uint64
}

// Shared is one exported VMM allocation, counted once for the container
// while any process holds a handle or mapping of it.
type Shared struct {
	Key     uint64 // identity of the shareable handle, 0 = free entry
	Size    uint64 // bytes, counted in Devices[Device].MemUsed and MemShared
	Device  uint32
	Holders uint32                    // processes holding it
	Seq     uint32                    // Header.SharedSeq when published
	Slots   [MaxProcesses / 64]uint64 // bit i: process slot i holds it
}

// Region is a whole region file.
type Region struct {
	Header    Header
	Devices   [MaxDevices]Device
	Processes [MaxProcesses]Process
	Shared    [MaxShared]Shared
}

// Enforced reports whether libvgpu enforces the limits of this container.
func (r *Region) Enforced() bool { return r.Header.Flags&FlagUnenforced == 0 }

// VisibleDevices returns the devices the header counts.
func (r *Region) VisibleDevices() []Device {
	n := int(r.Header.DeviceCount)
	if n > MaxDevices {
		n = MaxDevices
	}
	return r.Devices[:n]
}

// ActiveProcesses returns the slots in use.
func (r *Region) ActiveProcesses() []Process {
	var out []Process
	for _, p := range r.Processes {
		if p.State&0xff == ProcActive {
			out = append(out, p)
		}
	}
	return out
}

var le = binary.LittleEndian

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Decode reads a region file's bytes. It rejects a file that is not a
// region, of another layout version, or not completely initialised yet.
func Decode(b []byte) (*Region, error) {
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("region: %d bytes, shorter than the %d-byte header", len(b), HeaderSize)
	}
	if m := le.Uint32(b[offMagic:]); m != Magic {
		return nil, fmt.Errorf("region: magic %#x, want %#x (not a region, or not initialised yet)", m, Magic)
	}
	if v := le.Uint32(b[offVersion:]); v != Version {
		return nil, fmt.Errorf("region: layout version %d, this build reads version %d", v, Version)
	}
	if s := le.Uint32(b[offSize:]); s != Size || len(b) < Size {
		return nil, fmt.Errorf("region: header size %d and file size %d, want %d", s, len(b), Size)
	}
	r := &Region{}
	h := &r.Header
	h.Magic, h.Version, h.Size = le.Uint32(b[offMagic:]), le.Uint32(b[offVersion:]), le.Uint32(b[offSize:])
	h.HeaderSize, h.DeviceSize, h.ProcSize = le.Uint32(b[offHeaderSize:]), le.Uint32(b[offDeviceSize:]), le.Uint32(b[offProcessSize:])
	h.DeviceCount, h.ProcessCapacity = le.Uint32(b[offDeviceCount:]), le.Uint32(b[offProcessCapacity:])
	h.Flags, h.Reason = le.Uint32(b[offFlags:]), Reason(le.Uint32(b[offReason:]))
	h.CreatedNs = le.Uint64(b[offCreatedNs:])
	h.LiveSem, h.Attached = int32(le.Uint32(b[offLiveSem:])), le.Uint32(b[offAttached:])
	h.Unslotted, h.SharedCapacity = le.Uint32(b[offUnslotted:]), le.Uint32(b[offSharedCapacity:])
	h.SharedSeq = le.Uint32(b[offSharedSeq:])
	h.ReasonText = cstring(b[offReasonText : offReasonText+ReasonLen])
	if h.HeaderSize != HeaderSize || h.DeviceSize != DeviceSize || h.ProcSize != ProcessSize ||
		h.ProcessCapacity != MaxProcesses || h.DeviceCount > MaxDevices {
		return nil, fmt.Errorf("region: header declares sizes %d/%d/%d, capacity %d, %d devices; want %d/%d/%d, %d, at most %d",
			h.HeaderSize, h.DeviceSize, h.ProcSize, h.ProcessCapacity, h.DeviceCount,
			HeaderSize, DeviceSize, ProcessSize, MaxProcesses, MaxDevices)
	}
	for i := range r.Devices {
		d, o := &r.Devices[i], b[DevicesOffset+i*DeviceSize:]
		d.UUID = cstring(o[devUUID : devUUID+UUIDLen])
		d.MemLimit, d.CoreLimit = le.Uint64(o[devMemLimit:]), le.Uint32(o[devCoreLimit:])
		d.MemUsed, d.MemPeak, d.AllocFailures = le.Uint64(o[devMemUsed:]), le.Uint64(o[devMemPeak:]), le.Uint64(o[devAllocFailures:])
		d.MemUnslotted, d.MemShared = le.Uint64(o[devMemUnslotted:]), le.Uint64(o[devMemShared:])
		d.UtilSeq, d.UtilTimeNs, d.UtilPermille = le.Uint64(o[devUtilSeq:]), le.Uint64(o[devUtilTimeNs:]), le.Uint32(o[devUtilPermille:])
		d.TatNs, d.IntervalNs, d.Launches = le.Uint64(o[devTatNs:]), le.Uint64(o[devIntervalNs:]), le.Uint64(o[devLaunches:])
		d.SeenSeq, d.SeenLaunches, d.SeenTimeNs = le.Uint64(o[devSeenSeq:]), le.Uint64(o[devSeenLaunches:]), le.Uint64(o[devSeenTimeNs:])
		d.ThrottledNs = le.Uint64(o[devThrottledNs:])
		d.UtilBusyNs, d.BusyTatNs, d.SeenBusyNs = le.Uint64(o[devUtilBusyNs:]), le.Uint64(o[devBusyTatNs:]), le.Uint64(o[devSeenBusyNs:])
	}
	for i := range r.Processes {
		p, o := &r.Processes[i], b[ProcessesOffset+i*ProcessSize:]
		p.PID, p.State, p.StartTime = int32(le.Uint32(o[procPID:])), le.Uint32(o[procState:]), le.Uint64(o[procStartTime:])
		for d := range p.MemUsed {
			p.MemUsed[d] = le.Uint64(o[procMemUsed+8*d:])
		}
	}
	for i := range r.Shared {
		s, o := &r.Shared[i], b[SharedOffset+i*SharedSize:]
		s.Key, s.Size = le.Uint64(o[shKey:]), le.Uint64(o[shSize:])
		s.Device, s.Holders, s.Seq = le.Uint32(o[shDevice:]), le.Uint32(o[shHolders:]), le.Uint32(o[shSeq:])
		for j := range s.Slots {
			s.Slots[j] = le.Uint64(o[shSlots+8*j:])
		}
	}
	return r, nil
}

// Encode returns the region's bytes (Size of them). The size fields of the
// header are written from the layout, whatever r holds.
func (r *Region) Encode() []byte {
	b := make([]byte, Size)
	h := &r.Header
	le.PutUint32(b[offMagic:], h.Magic)
	le.PutUint32(b[offVersion:], h.Version)
	le.PutUint32(b[offSize:], Size)
	le.PutUint32(b[offHeaderSize:], HeaderSize)
	le.PutUint32(b[offDeviceSize:], DeviceSize)
	le.PutUint32(b[offProcessSize:], ProcessSize)
	le.PutUint32(b[offDeviceCount:], h.DeviceCount)
	le.PutUint32(b[offProcessCapacity:], MaxProcesses)
	le.PutUint32(b[offFlags:], h.Flags)
	le.PutUint32(b[offReason:], uint32(h.Reason))
	le.PutUint64(b[offCreatedNs:], h.CreatedNs)
	le.PutUint32(b[offLiveSem:], uint32(h.LiveSem))
	le.PutUint32(b[offAttached:], h.Attached)
	le.PutUint32(b[offUnslotted:], h.Unslotted)
	le.PutUint32(b[offSharedCapacity:], MaxShared)
	le.PutUint32(b[offSharedSeq:], h.SharedSeq)
	copy(b[offReasonText:offReasonText+ReasonLen-1], h.ReasonText)
	for i := range r.Devices {
		d, o := &r.Devices[i], b[DevicesOffset+i*DeviceSize:]
		copy(o[devUUID:devUUID+UUIDLen-1], d.UUID)
		le.PutUint64(o[devMemLimit:], d.MemLimit)
		le.PutUint32(o[devCoreLimit:], d.CoreLimit)
		le.PutUint64(o[devMemUsed:], d.MemUsed)
		le.PutUint64(o[devMemPeak:], d.MemPeak)
		le.PutUint64(o[devAllocFailures:], d.AllocFailures)
		le.PutUint64(o[devMemUnslotted:], d.MemUnslotted)
		le.PutUint64(o[devMemShared:], d.MemShared)
		le.PutUint64(o[devUtilSeq:], d.UtilSeq)
		le.PutUint64(o[devUtilTimeNs:], d.UtilTimeNs)
		le.PutUint32(o[devUtilPermille:], d.UtilPermille)
		le.PutUint64(o[devTatNs:], d.TatNs)
		le.PutUint64(o[devIntervalNs:], d.IntervalNs)
		le.PutUint64(o[devLaunches:], d.Launches)
		le.PutUint64(o[devSeenSeq:], d.SeenSeq)
		le.PutUint64(o[devSeenLaunches:], d.SeenLaunches)
		le.PutUint64(o[devSeenTimeNs:], d.SeenTimeNs)
		le.PutUint64(o[devThrottledNs:], d.ThrottledNs)
		le.PutUint64(o[devUtilBusyNs:], d.UtilBusyNs)
		le.PutUint64(o[devBusyTatNs:], d.BusyTatNs)
		le.PutUint64(o[devSeenBusyNs:], d.SeenBusyNs)
	}
	for i := range r.Processes {
		p, o := &r.Processes[i], b[ProcessesOffset+i*ProcessSize:]
		le.PutUint32(o[procPID:], uint32(p.PID))
		le.PutUint32(o[procState:], p.State)
		le.PutUint64(o[procStartTime:], p.StartTime)
		for d, u := range p.MemUsed {
			le.PutUint64(o[procMemUsed+8*d:], u)
		}
	}
	for i := range r.Shared {
		s, o := &r.Shared[i], b[SharedOffset+i*SharedSize:]
		le.PutUint64(o[shKey:], s.Key)
		le.PutUint64(o[shSize:], s.Size)
		le.PutUint32(o[shDevice:], s.Device)
		le.PutUint32(o[shHolders:], s.Holders)
		le.PutUint32(o[shSeq:], s.Seq)
		for j, v := range s.Slots {
			le.PutUint64(o[shSlots+8*j:], v)
		}
	}
	return b
}

// PublishUtil is the monitor's side of the utilisation feed: into mem, a
// live region (the file mapped shared and writable, page aligned, as mmap
// returns it), it writes device's utilisation over the sample that ended at
// monotonicNs (CLOCK_MONOTONIC), then increments the device's sequence
// number, which is what libvgpu watches. It also adds the sample's busy time
// (permille of the time since the previous sample) to the device's running
// total, from which libvgpu paces long kernels (docs/shared-region.md). The
// stores are atomic so that libvgpu, reading concurrently, never sees a torn
// value.
func PublishUtil(mem []byte, device int, permille uint32, monotonicNs uint64) error {
	if len(mem) < Size {
		return fmt.Errorf("region: %d bytes mapped, want %d", len(mem), Size)
	}
	if device < 0 || device >= MaxDevices {
		return fmt.Errorf("region: device %d out of range 0-%d", device, MaxDevices-1)
	}
	if permille > 1000 {
		permille = 1000
	}
	base := DevicesOffset + device*DeviceSize
	if uintptr(unsafe.Pointer(&mem[base]))%8 != 0 {
		return fmt.Errorf("region: mapping is not 8-byte aligned")
	}
	timeNs := (*uint64)(unsafe.Pointer(&mem[base+devUtilTimeNs]))
	if prev := atomic.LoadUint64(timeNs); prev != 0 && monotonicNs > prev {
		atomic.AddUint64((*uint64)(unsafe.Pointer(&mem[base+devUtilBusyNs])), (monotonicNs-prev)*uint64(permille)/1000)
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&mem[base+devUtilPermille])), permille)
	atomic.StoreUint64(timeNs, monotonicNs)
	atomic.AddUint64((*uint64)(unsafe.Pointer(&mem[base+devUtilSeq])), 1)
	return nil
}
