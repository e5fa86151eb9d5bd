package placement

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/vgpu-io/vgpu/lib/kubescore"
)

// HostBook is each node's allocatable CPU and memory less what the
// unfinished pods bound to it request, as the extender's books keep it
// (cmd/extender/internal/hosts), for callers that start from lists of
// nodes and pods: the digital twin and vgpuctl's what-if
// (docs/placement.md). Pods on nodes not listed are left out.
func HostBook(nodes []*corev1.Node, pods []*corev1.Pod) map[string]HostFree {
	free := make(map[string]HostFree, len(nodes))
	for _, n := range nodes {
		free[n.Name] = HostFree{CPUMilli: n.Status.Allocatable.Cpu().MilliValue(), MemoryMiB: n.Status.Allocatable.Memory().Value() >> 20, Known: true}
	}
	for _, p := range pods {
		f, ok := free[p.Spec.NodeName]
		if !ok || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		cpu, mem := kubescore.HostRequests(p)
		f.CPUMilli, f.MemoryMiB = f.CPUMilli-cpu, f.MemoryMiB-mem
		free[p.Spec.NodeName] = f
	}
	return free
}
