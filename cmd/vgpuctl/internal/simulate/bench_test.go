package simulate

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// BenchmarkReplayOpenB replays each openb trace once under the
// fragmentation policy on the paper's 1,213-node cluster (docs/placement.md
// gives the target: under a second). The traces are not in the repository:
// set VGPU_OPENB_DIR to the folder holding openb_node_list_gpu_node.csv and
// the openb_pod_list_*.csv files.
func BenchmarkReplayOpenB(b *testing.B) {
	dir := os.Getenv("VGPU_OPENB_DIR")
	if dir == "" {
		b.Skip("VGPU_OPENB_DIR is not set")
	}
	c, err := loadCluster(filepath.Join(dir, "openb_node_list_gpu_node.csv"))
	if err != nil {
		b.Fatal(err)
	}
	frag := placement.Policies{Node: settings.Fragmentation, GPU: settings.Fragmentation}
	for _, trace := range []string{"default", "gpushare40", "gpuspec10", "multigpu20"} {
		b.Run(trace, func(b *testing.B) {
			w, err := loadWorkload(filepath.Join(dir, "openb_pod_list_"+trace+".csv"), c)
			if err != nil {
				b.Fatal(err)
			}
			seed := uint64(1)
			start := cpuTime(b)
			defer func() { b.ReportMetric((cpuTime(b)-start).Seconds()/float64(b.N), "cpu-s/op") }()
			for b.Loop() {
				if _, err := Replay(c, w, Options{Policies: frag, SplitCount: 20, MemoryScaling: 1, Seed: seed, TargetPercent: 130, CPUWeight: 1}); err != nil {
					b.Fatal(err)
				}
				seed++
			}
		})
	}
}

// cpuTime is the process's CPU time so far (all threads): on a shared
// machine it says more of the code than wall time does.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
