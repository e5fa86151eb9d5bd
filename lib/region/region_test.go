package region

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// regionTool builds libvgpu/test/region_tool.c, the C declaration's side of
// the agreement, with the system C compiler.
func regionTool(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc: the C side of the layout cannot be built")
	}
	src, _ := filepath.Abs("../../libvgpu/test/region_tool.c")
	inc, _ := filepath.Abs("../../libvgpu/include")
	bin := filepath.Join(t.TempDir(), "region_tool")
	if out, err := exec.Command(cc, "-O1", "-I"+inc, "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("building region_tool: %v\n%s", err, out)
	}
	return bin
}

// Every field's offset and size as C sees them must be the Go ones.
func TestLayoutMatchesC(t *testing.T) {
	out, err := exec.Command(regionTool(t), "layout").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int{
		"region": {0, Size}, "region.devices": {DevicesOffset, DeviceSize}, "region.procs": {ProcessesOffset, ProcessSize},
		"header.magic": {offMagic, 4}, "header.version": {offVersion, 4}, "header.size": {offSize, 4},
		"header.header_size": {offHeaderSize, 4}, "header.device_size": {offDeviceSize, 4},
		"header.process_size": {offProcessSize, 4}, "header.device_count": {offDeviceCount, 4},
		"header.process_capacity": {offProcessCapacity, 4}, "header.flags": {offFlags, 4},
		"header.reason": {offReason, 4}, "header.created_ns": {offCreatedNs, 8},
		"header.live_sem": {offLiveSem, 4}, "header.attached": {offAttached, 4}, "header.unslotted": {offUnslotted, 4}, "header.shared_capacity": {offSharedCapacity, 4},
		"header.reason_text": {offReasonText, ReasonLen}, "header.shared_seq": {offSharedSeq, 4},
		"device.uuid": {devUUID, UUIDLen}, "device.mem_limit": {devMemLimit, 8}, "device.core_limit": {devCoreLimit, 4},
		"device.mem_used": {devMemUsed, 8}, "device.mem_peak": {devMemPeak, 8},
		"device.alloc_failures": {devAllocFailures, 8}, "device.util_seq": {devUtilSeq, 8},
		"device.mem_unslotted": {devMemUnslotted, 8}, "device.mem_shared": {devMemShared, 8},
		"device.util_time_ns": {devUtilTimeNs, 8}, "device.util_permille": {devUtilPermille, 4},
		"device.tat_ns": {devTatNs, 8}, "device.interval_ns": {devIntervalNs, 8}, "device.launches": {devLaunches, 8},
		"device.seen_seq": {devSeenSeq, 8}, "device.seen_launches": {devSeenLaunches, 8},
		"device.seen_time_ns": {devSeenTimeNs, 8}, "device.throttled_ns": {devThrottledNs, 8},
		"device.util_busy_ns": {devUtilBusyNs, 8}, "device.busy_tat_ns": {devBusyTatNs, 8},
		"device.seen_busy_ns": {devSeenBusyNs, 8},
		"process.pid":         {procPID, 4}, "process.state": {procState, 4}, "process.start_time": {procStartTime, 8},
		"process.mem_used": {procMemUsed, 8 * MaxDevices},
		"region.shared":    {SharedOffset, SharedSize}, "shared.key": {shKey, 8}, "shared.size": {shSize, 8},
		"shared.device": {shDevice, 4}, "shared.holders": {shHolders, 4}, "shared.seq": {shSeq, 4}, "shared.slots": {shSlots, 8 * MaxProcesses / 64},
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var name string
		var off, size int
		if _, err := fmt.Sscan(sc.Text(), &name, &off, &size); err != nil {
			t.Fatalf("bad layout line %q: %v", sc.Text(), err)
		}
		w, ok := want[name]
		if !ok {
			t.Errorf("C field %s is not declared in Go", name)
			continue
		}
		if w != [2]int{off, size} {
			t.Errorf("%s: C offset %d size %d, Go offset %d size %d", name, off, size, w[0], w[1])
		}
		seen[name] = true
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("Go field %s is not in the C layout dump", name)
		}
	}
}

// A region written by C decodes in Go to the values region_tool.c's fill() wrote.
func TestDecodeCWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "region")
	if out, err := exec.Command(regionTool(t), "write", path).CombinedOutput(); err != nil {
		t.Fatalf("region_tool write: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != Size {
		t.Fatalf("C wrote %d bytes, Go Size is %d", len(b), Size)
	}
	r, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Enforced() || r.Header.Reason != ReasonDriverUnknown || r.Header.ReasonText != "test reason" ||
		r.Header.CreatedNs != 1700000000123456789 || r.Header.DeviceCount != 3 || r.Header.Unslotted != 5 || r.Header.LiveSem != 8 || r.Header.Attached != 9 ||
		r.Header.SharedCapacity != MaxShared || r.Header.SharedSeq != 31 {
		t.Errorf("header %+v", r.Header)
	}
	if got := len(r.VisibleDevices()); got != 3 {
		t.Errorf("%d visible devices, want 3", got)
	}
	for i := 0; i < 3; i++ {
		u := uint64(i)
		want := Device{
			UUID: fmt.Sprintf("GPU-%08d-0000-0000-0000-000000000000", i), MemLimit: (u + 1) << 30,
			CoreLimit: 10 * uint32(i+1), MemUsed: 1000 + u, MemPeak: 2000 + u, AllocFailures: 3 + u,
			MemUnslotted: 14 + u, MemShared: 15 + u,
			UtilSeq: 4 + u, UtilTimeNs: 5 + u, UtilPermille: 600 + uint32(i), TatNs: 7 + u, IntervalNs: 8 + u,
			Launches: 9 + u, SeenSeq: 10 + u, SeenLaunches: 11 + u, SeenTimeNs: 12 + u, ThrottledNs: 13 + u,
			UtilBusyNs: 14 + u, BusyTatNs: 15 + u, SeenBusyNs: 16 + u,
		}
		if r.Devices[i] != want {
			t.Errorf("device %d:\n got %+v\nwant %+v", i, r.Devices[i], want)
		}
	}
	ps := r.ActiveProcesses()
	if len(ps) != 2 || ps[0].PID != 100 || ps[1].PID != 101 || ps[1].StartTime != 5001 ||
		ps[1].MemUsed[2] != 12<<20 || r.Processes[5].PID != 101 || ps[1].State != ProcActive|ProcCounted {
		t.Errorf("processes %+v", ps)
	}
	if s := r.Shared[7]; s.Key != 0x1234567890abcdef || s.Size != 512<<20 || s.Device != 2 || s.Holders != 2 || s.Seq != 30 ||
		s.Slots[0] != 1<<5 || s.Slots[15] != 1<<63 || r.Shared[6].Key != 0 {
		t.Errorf("shared entry 7: %+v", s)
	}
	// Go encodes the same bytes C wrote.
	if e := r.Encode(); !bytes.Equal(e, b) {
		for i := range e {
			if e[i] != b[i] {
				t.Fatalf("Encode differs from the C bytes first at offset %d", i)
			}
		}
	}
}

// A region encoded in Go reads in C as the values Go put in.
func TestCReadsGoEncoded(t *testing.T) {
	r := &Region{Header: Header{Magic: Magic, Version: Version, DeviceCount: 2, Reason: ReasonNoUtilFeed, Flags: FlagUnenforced, CreatedNs: 42, LiveSem: 12, Attached: 4, Unslotted: 3, ReasonText: "no feed"}}
	r.Devices[0] = Device{UUID: "GPU-aaaa", MemLimit: 4 << 30, CoreLimit: 30, MemUsed: 123, MemUnslotted: 20, MemShared: 100, UtilSeq: 7, UtilPermille: 250, IntervalNs: 999}
	r.Shared[MaxShared-1] = Shared{Key: 99, Size: 100, Device: 0, Holders: 2}
	r.Devices[1] = Device{UUID: "GPU-bbbb", MemLimit: 8 << 30}
	r.Processes[3] = Process{PID: 77, State: ProcActive, StartTime: 1234}
	r.Processes[3].MemUsed[0] = 123
	path := filepath.Join(t.TempDir(), "region")
	if err := os.WriteFile(path, r.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(regionTool(t), "read", path).CombinedOutput()
	if err != nil {
		t.Fatalf("region_tool read: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		got[k] = v
	}
	want := map[string]string{
		"header.magic": strconv.Itoa(int(Magic)), "header.version": "2", "header.size": strconv.Itoa(Size),
		"header.device_count": "2", "header.flags": "1", "header.reason": "5", "header.created_ns": "42",
		"header.reason_text": "no feed", "header.unslotted": "3", "header.live_sem": "12", "header.attached": "4", "device0.uuid": "GPU-aaaa", "device0.mem_limit": "4294967296",
		"device0.mem_unslotted": "20", "device0.mem_shared": "100", "shared255.key": "99", "shared255.size": "100",
		"shared255.holders":  "2",
		"device0.core_limit": "30", "device0.mem_used": "123", "device0.util_seq": "7", "device0.util_permille": "250",
		"device0.interval_ns": "999", "device1.uuid": "GPU-bbbb", "device1.mem_limit": "8589934592",
		"process3.pid": "77", "process3.start_time": "1234", "process3.mem_used0": "123",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("C read %s = %q, Go wrote %q", k, got[k], v)
		}
	}
}

func TestPublishUtil(t *testing.T) {
	r := &Region{Header: Header{Magic: Magic, Version: Version, DeviceCount: 2}}
	mem := r.Encode()
	for i := 0; i < 3; i++ {
		if err := PublishUtil(mem, 1, 1500, 99+uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Decode(mem)
	if err != nil {
		t.Fatal(err)
	}
	d := got.Devices[1]
	if d.UtilSeq != 3 || d.UtilPermille != 1000 || d.UtilTimeNs != 101 || got.Devices[0].UtilSeq != 0 {
		t.Errorf("after 3 samples: %+v", d)
	}
	// Busy time: each sample's permille of the time since the one before (the first has no start).
	if d.UtilBusyNs != 2 {
		t.Errorf("busy after 3 saturated samples 1 ns apart: %d ns, want 2", d.UtilBusyNs)
	}
	if err := PublishUtil(mem, 1, 250, 101+1e9); err != nil {
		t.Fatal(err)
	}
	if got, _ := Decode(mem); got.Devices[1].UtilBusyNs != 2+250_000_000 {
		t.Errorf("busy after 1 s at 25%%: %d ns, want %d", got.Devices[1].UtilBusyNs, 2+250_000_000)
	}
	if err := PublishUtil(mem, MaxDevices, 1, 1); err == nil {
		t.Error("device out of range accepted")
	}
	if err := PublishUtil(mem[:100], 0, 1, 1); err == nil {
		t.Error("short mapping accepted")
	}
}

func TestDecodeRejects(t *testing.T) {
	good := (&Region{Header: Header{Magic: Magic, Version: Version}}).Encode()
	for name, mutate := range map[string]func([]byte) []byte{
		"short":        func(b []byte) []byte { return b[:100] },
		"truncated":    func(b []byte) []byte { return b[:Size-1] },
		"magic":        func(b []byte) []byte { b[0] ^= 1; return b },
		"version":      func(b []byte) []byte { le.PutUint32(b[offVersion:], Version+1); return b },
		"device count": func(b []byte) []byte { le.PutUint32(b[offDeviceCount:], MaxDevices+1); return b },
	} {
		b := mutate(append([]byte(nil), good...))
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := Decode(good); err != nil {
		t.Errorf("good region: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add((&Region{Header: Header{Magic: Magic, Version: Version, DeviceCount: 1}}).Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Decode(r.Encode())
		if err != nil || again.Header.DeviceCount != r.Header.DeviceCount {
			t.Fatalf("re-decoding an encoded region: %v", err)
		}
	})
}
