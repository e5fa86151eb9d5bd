package regions

// The reader against regions written by libvgpu itself, so that the two
// sides cannot drift: libvgpu.so is built by its Makefile target, the fake
// driver and the test programs by gcc from libvgpu/test, as its own suite
// builds them.

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var repoRoot, _ = filepath.Abs("../../../..")

func gcc(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

type libvgpu struct {
	so, lib, bin string
}

func buildLibvgpu(t *testing.T) libvgpu {
	t.Helper()
	for _, tool := range []string{"gcc", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: libvgpu cannot be built", tool)
		}
	}
	make := exec.Command("make", "--no-print-directory", "-C", repoRoot, "build-libvgpu")
	if out, err := make.CombinedOutput(); err != nil {
		t.Fatalf("make build-libvgpu: %v\n%s", err, out)
	}
	w := t.TempDir()
	l := libvgpu{so: filepath.Join(repoRoot, "libvgpu", "build", "libvgpu.so"), lib: filepath.Join(w, "lib"), bin: w}
	if err := os.MkdirAll(l.lib, 0o755); err != nil {
		t.Fatal(err)
	}
	test := filepath.Join(repoRoot, "libvgpu", "test")
	cflags := []string{"-O2", "-Wall", "-I" + filepath.Join(repoRoot, "libvgpu", "include")}
	shared := append(append([]string{}, cflags...), "-fPIC", "-shared", "-fvisibility=hidden", "-Wl,-Bsymbolic")
	gcc(t, append(shared, "-Wl,-soname,libcuda.so.1", "-o", filepath.Join(l.lib, "libcuda.so.1"),
		filepath.Join(test, "fake", "fake_cuda.c"), filepath.Join(test, "fake", "fake_common.c"))...)
	gcc(t, append(shared, "-Wl,-soname,libnvidia-ml.so.1", "-o", filepath.Join(l.lib, "libnvidia-ml.so.1"),
		filepath.Join(test, "fake", "fake_nvml.c"), filepath.Join(test, "fake", "fake_common.c"))...)
	for _, n := range []string{"libcuda.so", "libnvidia-ml.so"} {
		if err := os.Symlink(n+".1", filepath.Join(l.lib, n)); err != nil {
			t.Fatal(err)
		}
	}
	gcc(t, append(cflags, "-o", filepath.Join(w, "t_hold"), filepath.Join(test, "t_hold.c"), "-L"+l.lib, "-lcuda", "-lnvidia-ml")...)
	gcc(t, append(cflags, "-o", filepath.Join(w, "region_tool"), filepath.Join(test, "region_tool.c"))...)
	return l
}

const (
	fakeUUID0 = "GPU-00000000-0000-0000-0000-0000000000a0"
	fakeUUID1 = "GPU-00000000-0000-0000-0000-0000000000a1"
)

// hold starts t_hold under libvgpu, allocating mib and keeping it.
func (l libvgpu) hold(t *testing.T, regionPath string, mib int, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(l.bin, "t_hold"), strconv.Itoa(mib), "hold")
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+l.lib, "LD_PRELOAD="+l.so, "VGPU_REGION="+regionPath,
		"FAKE_CUDA_STATS="+regionPath+".stats")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ok" {
		t.Fatalf("t_hold %d: %q, %v; stderr: %s", mib, line, err, stderr.String())
	}
	return cmd
}

func TestReadsRegionsWrittenByLibvgpu(t *testing.T) {
	l := buildLibvgpu(t)
	dir := t.TempDir()
	ctrDir := filepath.Join(dir, "0b4c8c6e-5a7a-4d36-9d8e-2f0e3c1b9a11_trainer")
	if err := os.MkdirAll(ctrDir, 0o777); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(ctrDir, "region")
	// Two devices, as the device plugin's Allocate sets them; two processes
	// of the container share the region.
	env := []string{"FAKE_CUDA_DEVICES=2", "NVIDIA_VISIBLE_DEVICES=" + fakeUUID1 + "," + fakeUUID0,
		"VGPU_MEMORY_LIMITS_MIB=4096,1024", "VGPU_CORE_LIMITS=30,0", "T_DEVICE=0"}
	p1 := l.hold(t, path, 300, env...)
	p2 := l.hold(t, path, 200, env...)

	core, logs := observer.New(zap.WarnLevel)
	r := NewReader(Decode, zap.New(core))
	entries, err := List(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("List: %v, %v", entries, err)
	}
	reg, st := r.Read(entries[0])
	if st != OK {
		t.Fatalf("status %v; log: %v", st, logs.All())
	}
	if !reg.Enforced {
		t.Error("libvgpu enforces these limits, the region says it does not")
	}
	if len(reg.Devices) != 2 {
		t.Fatalf("%d devices, want 2: %+v", len(reg.Devices), reg.Devices)
	}
	// The fake driver's device 0 (T_DEVICE) is the GPU with uuid ...a0,
	// the second visible device: usage is booked by uuid, not by position.
	want := []Device{
		{UUID: fakeUUID1, MemoryLimitBytes: 4096 << 20, MemoryUsedBytes: 0, CoresLimit: 30},
		{UUID: fakeUUID0, MemoryLimitBytes: 1024 << 20, MemoryUsedBytes: 500 << 20, CoresLimit: 0},
	}
	for i := range want {
		if reg.Devices[i] != want[i] {
			t.Errorf("device %d = %+v, want %+v", i, reg.Devices[i], want[i])
		}
	}
	pids := map[int32]bool{}
	for _, p := range reg.Processes {
		pids[p.PID] = true
	}
	if len(pids) != 2 || !pids[int32(p1.Process.Pid)] || !pids[int32(p2.Process.Pid)] {
		t.Errorf("processes %+v, want the two holders %d and %d", reg.Processes, p1.Process.Pid, p2.Process.Pid)
	}

	// The feed: what the monitor publishes, the C side reads.
	for i := 0; i < 3; i++ {
		if err := (Publisher{}).Publish(path, 0, 270); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(filepath.Join(l.bin, "region_tool"), "read", path).CombinedOutput()
	if err != nil {
		t.Fatalf("region_tool read: %v\n%s", err, out)
	}
	for _, line := range []string{"device0.util_seq=3", "device0.util_permille=270", "device1.util_seq=0"} {
		if !strings.Contains(string(out), line+"\n") {
			t.Errorf("C reads no %q after three samples:\n%s", line, out)
		}
	}

	// A killed process's memory goes back once libvgpu reclaims it, at the
	// next allocation of a live process; the reader sees the change.
	_ = p1.Process.Kill()
	_ = p1.Wait()
	l.hold(t, path, 100, env...)
	deadline := time.Now().Add(5 * time.Second)
	for {
		reg, st = r.Read(entries[0])
		if st == OK && reg.Devices[1].MemoryUsedBytes == 300<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after kill -9 of the 300 MiB holder and a new 100 MiB one: %+v, want 300 MiB used", reg.Devices[1])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUnenforcedRegionFromLibvgpu(t *testing.T) {
	l := buildLibvgpu(t)
	path := filepath.Join(t.TempDir(), "region")
	cmd := exec.Command(filepath.Join(l.bin, "t_hold"), "100")
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+l.lib, "LD_PRELOAD="+l.so, "VGPU_REGION="+path,
		"FAKE_CUDA_STATS="+path+".stats", "NVIDIA_VISIBLE_DEVICES="+fakeUUID0, "VGPU_MEMORY_LIMITS_MIB=lots")
	if out, err := cmd.CombinedOutput(); !strings.Contains(string(out), "NOT enforced") {
		t.Fatalf("t_hold with a bad limit: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Enforced || reg.Reason != "bad-env" || reg.ReasonText == "" {
		t.Fatalf("libvgpu said NOT enforced on stderr; the region reads %+v", reg)
	}
}

func TestCorruptAndTruncatedRegions(t *testing.T) {
	l := buildLibvgpu(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "u_c", "region")
	if err := os.MkdirAll(filepath.Dir(good), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(l.bin, "region_tool"), "write", good).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b, _ := os.ReadFile(good)
	reg, err := Decode(b)
	if err != nil || len(reg.Devices) != 3 || reg.Devices[2].CoresLimit != 30 || reg.Enforced {
		t.Fatalf("region_tool's region: %+v, %v", reg, err)
	}
	core, logs := observer.New(zap.WarnLevel)
	r := NewReader(Decode, zap.New(core))
	for name, content := range map[string][]byte{
		"u_truncated": b[:len(b)/2],
		"u_empty":     {},
		"u_magic":     append([]byte("XXXX"), b[4:]...),
		"u_version":   append(append(append([]byte{}, b[:4]...), 9, 0, 0, 0), b[8:]...),
	} {
		p := filepath.Join(dir, name, "region")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := List(dir)
	for scrape := 0; scrape < 4; scrape++ {
		for _, e := range entries {
			_, st := r.Read(e)
			if (e.Container == "c") != (st == OK) {
				t.Fatalf("%s: status %v", e, st)
			}
		}
	}
	if logs.Len() != 4 {
		t.Fatalf("4 scrapes of 4 bad regions logged %d lines, want 4 (once each)", logs.Len())
	}
	if err := (Publisher{}).Publish(filepath.Join(dir, "u_truncated", "region"), 0, 100); err == nil {
		t.Fatal("published into a truncated region")
	}
}
