package audit

import (
	"fmt"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/vgpu-io/vgpu/lib/assign"
)

// BenchmarkPass is one audit pass over a node with 8 GPUs shared by 80
// containers, one process each: NVML read, 80 region files read and
// decoded, 80 pids resolved through /proc, all compared.
func BenchmarkPass(b *testing.B) {
	n := newNode(b)
	uuids := make([]string, 8)
	for i, d := range n.srv.Devices {
		uuids[i], _ = d.(*server.Device).GetUUID()
	}
	for c := 0; c < 80; c++ {
		uid := fmt.Sprintf("%08x-1d2e-4f00-8a9b-0c1d2e3f4a5b", c)
		g := c % 8
		n.pod(uid, fmt.Sprintf("p%d", c), assign.Container{Name: "main", Devices: one(uuids[g], 4096)})
		n.region(uid, "main", map[string]uint64{uuids[g]: gb(4)}, []string{uuids[g]}, slot{7, 1000, []uint64{gb(2)}})
		n.process(1000+c, uid, "main", 7, 1000)
		n.compute[g] = append(n.compute[g], nvml.ProcessInfo{Pid: uint32(1000 + c), UsedGpuMemory: gb(2) + ctxMiB})
	}
	a := n.auditor(0)
	if got := a.Pass(); len(got) != 0 {
		b.Fatalf("an honest node has findings: %v", summary(got))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.Pass()
	}
}
