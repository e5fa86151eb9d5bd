package placement

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

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
	pol := Policies{Node: settings.Binpack, GPU: settings.Spread}
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
	pol := Policies{Node: settings.Binpack, GPU: settings.Spread}
	b.ReportAllocs()
	for b.Loop() {
		if Best(benchPod, handles, pol, nil) < 0 {
			b.Fatal("no fit")
		}
	}
}

// benchMix is a learned mix like openb's: shares of several sizes, whole
// GPUs, 2- and 4-GPU pods, some tied to a model, with CPU and memory.
func benchMix(b *testing.B) (*Mix, []*request.Pod) {
	b.Helper()
	var shapes []*request.Pod
	for _, pct := range []int{5, 10, 16, 23, 32, 47, 50, 65, 81} {
		shapes = append(shapes, &request.Pod{Containers: []request.Container{{Name: "c", Count: 1, MemoryPercent: pct, Cores: pct}}, HostCPUMilli: int64(pct) * 200, HostMemoryMiB: 8192})
	}
	for _, n := range []int{1, 2, 4, 8} {
		shapes = append(shapes, &request.Pod{Containers: []request.Container{{Name: "c", Count: n, Exclusive: true}}, HostCPUMilli: int64(n) * 12000, HostMemoryMiB: int64(n) * 49152})
	}
	shapes = append(shapes, &request.Pod{Containers: []request.Container{{Name: "c", Count: 1, Exclusive: true}}, Selector: request.Selector{UseTypes: []string{"A100"}}, HostCPUMilli: 8000})
	m := NewMix(MixOptions{HalfLife: DefaultHalfLife})
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 5000; i++ {
		m.Observe(shapes[r.IntN(len(shapes))])
	}
	m.Refresh()
	return m, shapes
}

// BenchmarkBest5000x8Fragmentation is BenchmarkBest5000x8 under the
// fragmentation policy, with each node's free CPU and memory, and one
// arriving pod counted into the learned mix per operation (as the
// extender's informer does), refreshes included.
func BenchmarkBest5000x8Fragmentation(b *testing.B) {
	benchFragmentation(b, false)
}

// BenchmarkBest5000x8FragmentationCold measures every node anew at each
// operation, as after a refresh of the mix or when every node changed.
func BenchmarkBest5000x8FragmentationCold(b *testing.B) {
	benchFragmentation(b, true)
}

func benchFragmentation(b *testing.B, cold bool) {
	l, names := benchCluster(b)
	handles := l.Lookup(names, nil)
	m, shapes := benchMix(b)
	host := make(map[string]HostFree, len(names))
	for i, n := range names {
		host[n] = HostFree{CPUMilli: int64(8000 + i%64*1000), MemoryMiB: 1 << 19, Known: true}
	}
	pol := Policies{Node: settings.Fragmentation, GPU: settings.Fragmentation, Mix: m, Host: func(n string) HostFree { return host[n] }}
	b.ReportAllocs()
	defer reportCPU(b)()
	i := 0
	for b.Loop() {
		if cold {
			m.cache.Clear()
		}
		m.Observe(shapes[i%len(shapes)])
		i++
		if Best(benchPod, handles, pol, nil) < 0 {
			b.Fatal("no fit")
		}
	}
}

// reportCPU adds the process's CPU time per operation (all threads) to the
// benchmark's output: on a shared machine, wall time per operation says
// more of the neighbours than of the code. Call it after setup and defer
// the function it returns.
func reportCPU(b *testing.B) func() {
	start := cpuTime(b)
	return func() { b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op") }
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
