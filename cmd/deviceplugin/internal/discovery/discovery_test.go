package discovery

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vgpu-io/vgpu/internal/gpumock"
)

func TestNUMANodeFromSysfs(t *testing.T) {
	sys := t.TempDir()
	dev := filepath.Join(sys, "bus/pci/devices/0000:3b:00.0")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "numa_node"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int{
		"00000000:3B:00.0": 1,  // NVML's 8-digit domain, upper case
		"0000:3b:00.0":     1,  // sysfs's own form
		"00000000:3c:00.0": -1, // no such device
		"garbage":          -1,
	} {
		if got := NUMANode(sys, id); got != want {
			t.Errorf("NUMANode(%q) = %d, want %d", id, got, want)
		}
	}
	if err := os.WriteFile(filepath.Join(dev, "numa_node"), []byte("-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := NUMANode(sys, "0000:3b:00.0"); got != -1 {
		t.Errorf("a device without NUMA affinity: %d, want -1", got)
	}
}

func TestDiscoverMock(t *testing.T) {
	s := gpumock.New(gpumock.Spec{Model: "dgxh100", Count: 3}, "n")
	gpus, err := Discover(s, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) != 3 {
		t.Fatalf("%d GPUs, want 3", len(gpus))
	}
	for i, g := range gpus {
		if g.UUID != s.UUID(i) || g.Index != i || g.Model != "NVIDIA H100 80GB HBM3" || g.MemoryMiB != 80*1024 || !g.Healthy || g.NUMANode != -1 {
			t.Errorf("GPU %d: %+v", i, g)
		}
	}
	other := gpumock.New(gpumock.Spec{Model: "dgxh100", Count: 1}, "other-node")
	if other.UUID(0) == s.UUID(0) {
		t.Error("two simulated nodes share a GPU uuid")
	}
}

func TestWatchHealthIgnoresApplicationXids(t *testing.T) {
	s := gpumock.New(gpumock.Spec{Model: "a30", Count: 2}, "n")
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan Event, 4)
	done := make(chan error, 1)
	go func() {
		done <- WatchHealth(ctx, s, []string{s.UUID(0), s.UUID(1)}, DefaultIgnoredXids, func(e Event) { events <- e },
			func(msg, uuid string, err error) { t.Errorf("%s %s: %v", msg, uuid, err) })
	}()
	deadline := time.Now().Add(10 * time.Second)
	for s.InjectXid(0, 31) != nil { // until the watch has registered
		if time.Now().After(deadline) {
			t.Fatal("the health watch never registered for Xid events")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.InjectXid(1, 48); err != nil { // double-bit ECC error
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e.UUID != s.UUID(1) || e.Xid != 48 {
			t.Fatalf("event %+v, want Xid 48 on GPU 1 (Xid 31 is an application error)", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event for Xid 48")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
