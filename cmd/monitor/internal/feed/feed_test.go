package feed

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/procs"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/lib/region"
)

type sample struct {
	path     string
	device   int
	permille uint32
}

type recorder struct {
	got  []sample
	fail error
}

func (r *recorder) Publish(path string, device int, permille uint32) error {
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, sample{filepath.Base(filepath.Dir(path)), device, permille})
	return nil
}

type fixedGPUs []gpus.GPU

func (g fixedGPUs) Read() ([]gpus.GPU, error) { return g, nil }

type owners map[uint32]procs.Owner

func (o owners) Owner(pid uint32) (procs.Owner, error) {
	if w, ok := o[pid]; ok {
		return w, nil
	}
	return procs.Owner{}, errors.New("not in a pod")
}

func jsonDecoder(b []byte) (regions.Region, error) {
	var r regions.Region
	return r, json.Unmarshal(b, &r)
}

func put(t *testing.T, dir, name string, r regions.Region) {
	b, _ := json.Marshal(r)
	if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name, "region"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTickPublishesPerContainerUtilization(t *testing.T) {
	dir := t.TempDir()
	// pod A: one container limited to 30 % on GPU a, 0 (none) on GPU b.
	put(t, dir, "podA_train", regions.Region{Devices: []regions.Device{{UUID: "a", CoresLimit: 0}, {UUID: "b", CoresLimit: 30}}, Processes: []regions.Process{{PID: 7}}})
	// pod B: limited on GPU a, whose NVML cannot sample per process.
	put(t, dir, "podB_infer", regions.Region{Devices: []regions.Device{{UUID: "c", CoresLimit: 50}}})
	// pod E: limited on a GPU where NVML measures nothing: no sample.
	put(t, dir, "podE_blind", regions.Region{Devices: []regions.Device{{UUID: "d", CoresLimit: 40}}})
	// pod C: no limit at all: nothing to feed.
	put(t, dir, "podC_free", regions.Region{Devices: []regions.Device{{UUID: "b"}}})
	// pod D: a whole GPU (100): libvgpu does not throttle it.
	put(t, dir, "podD_whole", regions.Region{Devices: []regions.Device{{UUID: "a", CoresLimit: 100}}})

	g := fixedGPUs{
		{UUID: "a", UtilizationPercent: 90, PerProcessSM: true},
		{UUID: "b", UtilizationPercent: 80, PerProcessSM: true, Processes: []gpus.Process{{PID: 1007, SMPercent: 24}, {PID: 1008, SMPercent: 40}, {PID: 1009, SMPercent: 16}}},
		{UUID: "c", UtilizationPercent: 65, PerProcessSM: false, Processes: []gpus.Process{{PID: 2001}}},
		{UUID: "d", UtilizationPercent: -1, PerProcessSM: false},
	}
	o := owners{
		1007: {PodUID: "podA", NSPID: 7},
		1008: {PodUID: "podC", NSPID: 1},  // another pod's process on GPU b
		1009: {PodUID: "podA", NSPID: 99}, // pod A, but not a pid the region lists
		2001: {PodUID: "podB", NSPID: 1},
	}
	rec := &recorder{}
	f := &Feeder{Dir: dir, GPUs: g, Regions: regions.NewReader(jsonDecoder, zap.NewNop()), Procs: o, Writer: rec, Log: zap.NewNop()}
	if n := f.Tick(); n != 2 {
		t.Fatalf("published %d samples, want 2: %+v", n, rec.got)
	}
	want := []sample{{"podA_train", 1, 240}, {"podB_infer", 0, 650}}
	for i := range want {
		if rec.got[i] != want[i] {
			t.Errorf("sample %d = %+v, want %+v", i, rec.got[i], want[i])
		}
	}
}

func TestPublishFailureLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	put(t, dir, "p_c", regions.Region{Devices: []regions.Device{{UUID: "a", CoresLimit: 30}}})
	core, logs := observer.New(zap.WarnLevel)
	rec := &recorder{fail: errors.New("read-only file system")}
	f := &Feeder{Dir: dir, GPUs: fixedGPUs{{UUID: "a", PerProcessSM: true}}, Regions: regions.NewReader(jsonDecoder, zap.NewNop()), Writer: rec, Log: zap.New(core)}
	for i := 0; i < 10; i++ {
		f.Tick()
	}
	if logs.Len() != 1 {
		t.Fatalf("10 failing ticks logged %d lines, want 1", logs.Len())
	}
}

func TestPermille(t *testing.T) {
	for _, tc := range []struct {
		g    gpus.GPU
		sm   uint32
		want uint32
		ok   bool
	}{
		{gpus.GPU{PerProcessSM: true, UtilizationPercent: 90}, 25, 250, true},
		{gpus.GPU{PerProcessSM: true}, 0, 0, true},      // ran nothing: 0 is a measurement
		{gpus.GPU{PerProcessSM: true}, 130, 1000, true}, // samples of several processes can exceed 100
		{gpus.GPU{PerProcessSM: false, UtilizationPercent: 42}, 0, 420, true},
		{gpus.GPU{PerProcessSM: false, UtilizationPercent: -1}, 0, 0, false}, // nothing measured: skip
	} {
		if got, ok := Permille(tc.g, tc.sm); got != tc.want || ok != tc.ok {
			t.Errorf("Permille(%+v, %d) = %d, %v; want %d, %v", tc.g, tc.sm, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRegionsAreRereadPeriodically(t *testing.T) {
	dir := t.TempDir()
	put(t, dir, "p_c", regions.Region{Devices: []regions.Device{{UUID: "a", CoresLimit: 30}}})
	now := time.Unix(0, 0)
	rec := &recorder{}
	f := &Feeder{Dir: dir, GPUs: fixedGPUs{{UUID: "a", PerProcessSM: true}}, Regions: regions.NewReader(jsonDecoder, zap.NewNop()),
		Writer: rec, Log: zap.NewNop(), Reread: time.Second, Now: func() time.Time { return now }}
	if f.Tick() != 1 {
		t.Fatal("no sample")
	}
	// The limit is lifted: samples continue until the region is read again.
	put(t, dir, "p_c", regions.Region{Devices: []regions.Device{{UUID: "a"}}})
	now = now.Add(500 * time.Millisecond)
	if f.Tick() != 1 {
		t.Fatal("region reread before Reread passed")
	}
	now = now.Add(600 * time.Millisecond)
	if n := f.Tick(); n != 0 {
		t.Fatalf("%d samples after the reread showed no limit", n)
	}
	// A removed region is forgotten at once.
	if err := os.RemoveAll(filepath.Join(dir, "p_c")); err != nil {
		t.Fatal(err)
	}
	f.Tick()
	if len(f.known) != 0 {
		t.Fatalf("%d regions remembered after removal", len(f.known))
	}
}

// BenchmarkTick is one feed pass on a busy node: 80 limited containers on
// 8 GPUs, with regions reread once a second as the monitor does (so most
// ticks only measure and publish).
func BenchmarkTick(b *testing.B) {
	dir := b.TempDir()
	var g fixedGPUs
	for i := 0; i < 8; i++ {
		g = append(g, gpus.GPU{UUID: fmt.Sprint("GPU-", i), PerProcessSM: true})
	}
	for i := 0; i < 80; i++ {
		r := region.Region{Header: region.Header{Magic: region.Magic, Version: region.Version, DeviceCount: 1}}
		r.Devices[0] = region.Device{UUID: g[i%8].UUID, CoreLimit: 30}
		d := filepath.Join(dir, fmt.Sprintf("uid%02d_c", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "region"), r.Encode(), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Unix(0, 0)
	f := &Feeder{Dir: dir, GPUs: g, Regions: regions.NewReader(regions.Decode, zap.NewNop()), Writer: regions.Publisher{},
		Log: zap.NewNop(), Reread: time.Second, Now: func() time.Time { return now }}
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		if f.Tick() != 80 {
			b.Fatal("not every container was fed")
		}
	}
}

// On the DRA path a region is named by claim; its processes are those of
// every pod the claim is reserved for.
func TestTickFeedsClaimRegionsThroughTheirPods(t *testing.T) {
	dir, claims := t.TempDir(), t.TempDir()
	put(t, claims, "claim1_gpu", regions.Region{Devices: []regions.Device{{UUID: "a", CoresLimit: 25}}, Processes: []regions.Process{{PID: 3, StartTime: 30}, {PID: 3, StartTime: 40}}})
	put(t, claims, "unheld_gpu", regions.Region{Devices: []regions.Device{{UUID: "a", CoresLimit: 25}}})
	g := fixedGPUs{{UUID: "a", UtilizationPercent: 50, PerProcessSM: true, Processes: []gpus.Process{{PID: 1003, SMPercent: 22}, {PID: 2003, SMPercent: 13}}}}
	// Two pods share the claim; each one's process is pid 3 in its own
	// namespace, told apart by start time.
	o := owners{1003: {PodUID: "podX", NSPID: 3, StartTime: 30}, 2003: {PodUID: "podY", NSPID: 3, StartTime: 40}}
	rec := &recorder{}
	f := &Feeder{Dir: dir, GPUs: g, Regions: regions.NewReader(jsonDecoder, zap.NewNop()), Procs: o, Writer: rec, Log: zap.NewNop(),
		Claims: regions.Claims{Dir: claims, Users: func(claim, _ string) []regions.Holder {
			if claim != "claim1" {
				return nil
			}
			return []regions.Holder{{PodUID: "podX", Containers: []string{"main", "side"}}, {PodUID: "podY", Containers: []string{"main"}}}
		}}}
	if n := f.Tick(); n != 1 || len(rec.got) != 1 || rec.got[0] != (sample{"claim1_gpu", 0, 350}) {
		t.Fatalf("published %d: %+v, want claim1's region fed once, 350 permille from the processes of podX and podY", n, rec.got)
	}
}
