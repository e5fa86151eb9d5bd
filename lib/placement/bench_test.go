package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// benchCluster is 5,000 nodes × 8 GPUs, about a third of each in use.
func benchCluster(b *testing.B) (*ledger.Ledger, []string) {
	b.Helper()
	l := ledger.New()
	r := rand.New(rand.NewPCG(1, 2))
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("node-%05d", i)
		l.SetInventory(names[i], gpus(10, 1, repeat(8, "A100:40960")...))
		for g := 0; g < 8; g++ {
			if r.IntN(3) > 0 {
				continue
			}
			a := assign.Pod{Node: names[i], Containers: []assign.Container{{Name: "c", Devices: []assign.Device{
				{UUID: fmt.Sprintf("GPU-%d", g), MemoryMiB: int64(r.IntN(30000) + 1), Cores: r.IntN(60)}}}}}
			if err := l.Reserve(fmt.Sprint(names[i], g), a); err != nil {
				b.Fatal(err)
			}
		}
	}
	return l, names
}

var benchPod = &request.Pod{Containers: []request.Container{{Name: "train", Count: 2, MemoryMiB: 20000, Cores: 30}}}

// BenchmarkFilterScore5000x8 is the extender's work for one pod: /filter
// then /prioritize over 5,000 nodes of 8 GPUs.
func BenchmarkFilterScore5000x8(b *testing.B) {
	l, names := benchCluster(b)
	pol := Policies{settings.Binpack, settings.Spread}
	b.ReportAllocs()
	for b.Loop() {
		fits, _ := Filter(l, benchPod, names, pol)
		Prioritize(l, benchPod, fits, pol)
	}
}

// BenchmarkBest5000x8 fits and scores in one pass, as the simulator does.
func BenchmarkBest5000x8(b *testing.B) {
	l, names := benchCluster(b)
	handles := l.Lookup(names, nil)
	pol := Policies{settings.Binpack, settings.Spread}
	b.ReportAllocs()
	for b.Loop() {
		if Best(benchPod, handles, pol, nil) < 0 {
			b.Fatal("no fit")
		}
	}
}
