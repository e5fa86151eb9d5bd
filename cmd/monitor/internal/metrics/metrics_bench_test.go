package metrics

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/pods"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/procs"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/region"
)

type benchGPUs []gpus.GPU

func (g benchGPUs) Read() ([]gpus.GPU, error) { return g, nil }

type benchPods struct {
	refs map[string]pods.Ref
	as   []pods.Assigned
}

func (p *benchPods) Lookup(uid string) (pods.Ref, bool) { r, ok := p.refs[uid]; return r, ok }
func (p *benchPods) Assignments() []pods.Assigned       { return p.as }
func (p *benchPods) Inventory() (device.Inventory, bool) {
	return device.Inventory{SplitCount: 10}, true
}

type noOwners struct{}

func (noOwners) Owner(uint32) (procs.Owner, error) { return procs.Owner{}, os.ErrNotExist }

// BenchmarkScrape is one full scrape of a busy node: 8 GPUs, each shared
// by 10 containers, every region read from disk and decoded.
func BenchmarkScrape(b *testing.B) {
	dir := b.TempDir()
	var gs benchGPUs
	bp := &benchPods{refs: map[string]pods.Ref{}}
	for g := 0; g < 8; g++ {
		gs = append(gs, gpus.GPU{Index: g, UUID: fmt.Sprintf("GPU-%d", g), Model: "A100", MemoryTotalBytes: 40 << 30, UtilizationPercent: 50, PerProcessSM: true})
	}
	for i := 0; i < 80; i++ {
		uid := fmt.Sprintf("uid-%02d", i)
		uuid := gs[i%8].UUID
		bp.refs[uid] = pods.Ref{Namespace: "ns", Name: uid}
		bp.as = append(bp.as, pods.Assigned{Ref: bp.refs[uid], Assignment: assign.Pod{Node: "n", Containers: []assign.Container{
			{Name: "c", Devices: []assign.Device{{UUID: uuid, MemoryMiB: 4096, Cores: 10}}}}}})
		r := region.Region{Header: region.Header{Magic: region.Magic, Version: region.Version, DeviceCount: 1}}
		r.Devices[0] = region.Device{UUID: uuid, MemLimit: 4 << 30, MemUsed: 1 << 30, CoreLimit: 10}
		d := filepath.Join(dir, contract.ContainerDirName(uid, "c"))
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, contract.RegionFileName), r.Encode(), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	c := &Collector{GPUs: gs, Pods: bp, Procs: noOwners{}, RegionsDir: dir, Regions: regions.NewReader(regions.Decode, zap.NewNop()), Log: zap.NewNop()}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	b.ResetTimer()
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil || len(mfs) == 0 {
			b.Fatal(err)
		}
	}
}
