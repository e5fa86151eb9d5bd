// Package usage attributes what NVML measures per process to containers:
// the process's cgroup names the pod, its pid inside the container names the
// region that lists it. Both the metrics and the compute feed use it, so
// that what is shown is what libvgpu is fed.
package usage

import (
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/procs"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
)

// OwnerResolver maps a host pid to its pod and container pid.
type OwnerResolver interface {
	Owner(pid uint32) (procs.Owner, error)
}

// Container is one container's region, as found on the node.
type Container struct {
	// PodUIDs are the pods whose processes may use the region: one, or
	// several that share a DRA claim.
	PodUIDs []string
	Region  regions.Region
}

// Utilization returns, for each container (same order) and each GPU uuid it
// has a device on, the summed SM percent of its processes. Every device of
// every container gets an entry, 0 when none of its processes ran. When a
// region lists no pids, the processes of its pod go to it if it is the
// pod's only region on that GPU; otherwise they cannot be told apart and
// count for none.
func Utilization(cs []Container, gs []gpus.GPU, owners OwnerResolver) []map[string]uint32 {
	out := make([]map[string]uint32, len(cs))
	users := map[string]map[string][]int{} // pod uid -> gpu uuid -> containers
	for i, c := range cs {
		out[i] = map[string]uint32{}
		for _, d := range c.Region.Devices {
			for _, uid := range c.PodUIDs {
				if users[uid] == nil {
					users[uid] = map[string][]int{}
				}
				users[uid][d.UUID] = append(users[uid][d.UUID], i)
			}
			out[i][d.UUID] = 0
		}
	}
	if owners == nil {
		return out
	}
	known := map[uint32]procs.Owner{}
	for _, g := range gs {
		for _, p := range g.Processes {
			o, ok := known[p.PID]
			if !ok {
				var err error
				if o, err = owners.Owner(p.PID); err != nil {
					continue
				}
				known[p.PID] = o
			}
			if i, ok := pick(cs, users[o.PodUID][g.UUID], o); ok {
				out[i][g.UUID] += p.SMPercent
			}
		}
	}
	return out
}

// pick finds the container whose region lists the process. Containers of a
// pod have their own pid namespaces, so the pid alone is ambiguous (each
// container's first process is pid 1); the start time, where both sides
// know it, tells them apart.
func pick(cs []Container, cands []int, o procs.Owner) (int, bool) {
	for _, i := range cands {
		for _, p := range cs[i].Region.Processes {
			if p.PID == o.NSPID && (p.StartTime == 0 || o.StartTime == 0 || p.StartTime == o.StartTime) {
				return i, true
			}
		}
	}
	if len(cands) == 1 && len(cs[cands[0]].Region.Processes) == 0 {
		return cands[0], true
	}
	return 0, false
}
