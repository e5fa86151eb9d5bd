// Package audit finds what no in-process library can: GPU memory that
// libvgpu does not account for. It compares what NVML says each process of
// a pod holds on each GPU with the container's shared region (its process
// slots and limits, docs/shared-region.md) and with the limit the scheduler
// assigned (vgpu.io/assignment). A statically linked program, one started
// without libvgpu, one whose slot was rewritten, a graphics API's memory:
// each shows up as memory NVML counts and the region does not. What is found
// marks the container unenforced (docs/metrics.md, docs/troubleshooting.md).
package audit

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/pods"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/procs"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/region"
)

// Reasons the monitor finds, beside libvgpu's own (the region's reason).
const (
	// ReasonUnaccountedProcess: a process of the pod holds memory on a GPU
	// and has no slot in its container's region, or the container has no
	// region or no device for that GPU.
	ReasonUnaccountedProcess = "unaccounted-process"
	// ReasonAboveLedger: a process holds more than its slot records, by
	// more than the tolerance.
	ReasonAboveLedger = "above-ledger"
	// ReasonAboveLimit: the container's processes together hold more than
	// its assigned limit, by more than the tolerance per process.
	ReasonAboveLimit = "above-limit"
	// ReasonNoRegion: the container has limits, has run for longer than the
	// grace period, and libvgpu has not attached to its region.
	ReasonNoRegion = "no-region"
	// ReasonRegionUnreadable: the container's region cannot be decoded
	// (truncated, overwritten, or a layout this monitor does not read), so
	// its processes cannot be checked one by one.
	ReasonRegionUnreadable = "region-unreadable"
)

// Evidence reports whether the finding shows that the container's limits do
// not hold because of the container. no-region and region-unreadable only
// show that the monitor cannot tell (a container that has not used its GPU
// yet has no region either; a monitor and a libvgpu of different versions
// read different layouts): they are reported while they last. libvgpu's
// no-util-feed is the monitor's own absence (a restart longer than 10 s
// marks every container with a cores limit). None of these evicts.
func (f Finding) Evidence() bool {
	switch f.Reason {
	case ReasonNoRegion, ReasonRegionUnreadable:
		return false
	case region.ReasonNoUtilFeed.String():
		return !f.Libvgpu
	}
	return true
}

// Key names one container of one pod.
type Key struct {
	PodUID    string
	Container string
}

// Finding is one reason why a container's limits do not hold.
type Finding struct {
	Key
	Ref pods.Ref
	// GPU is the uuid of the GPU concerned.
	GPU    string
	Reason string
	// Message says what was seen, for people: the metric's message label,
	// the Event and the log.
	Message string
	// Libvgpu is true when libvgpu itself marked the region unenforced;
	// false when the monitor found it.
	Libvgpu bool
}

// id tells findings apart across passes: the same container, reason and GPU
// is the same finding, whatever the numbers in its message.
func (f Finding) id() string { return f.PodUID + "/" + f.Container + "/" + f.Reason + "/" + f.GPU }

// Options are the thresholds of an inspection.
type Options struct {
	// Tolerance is how much more than libvgpu counts a process may hold:
	// what the CUDA context itself takes (docs/troubleshooting.md).
	Tolerance uint64
	// RegionGrace is how long a running container with limits may go
	// without a region.
	RegionGrace time.Duration
}

// Owners maps a host pid to its pod and container.
type Owners interface {
	Owner(pid uint32) (procs.Owner, error)
}

// Snapshot is the node at one moment.
type Snapshot struct {
	GPUs []gpus.GPU
	Pods []pods.Pod
	// Regions holds the readable regions, by container.
	Regions map[Key]regions.Region
	// Unreadable holds, by container, why its region could not be read.
	Unreadable map[Key]error
	Now        time.Time
}

type used struct {
	bytes uint64
	procs int
}

// slotless names the processes of a container on one GPU (as NVML names it) that
// have no slot.
type slotless struct {
	Key
	gpu string
}

// Unseen is a container whose region counts memory on a GPU on which NVML
// lists none of its pod's processes: the monitor cannot see that pod's
// processes (a driver that lists only the processes of the caller's pid
// namespace, a monitor without the host's), and its audit is blind.
type Unseen struct {
	Key
	GPU string
}

// Result is what one inspection found.
type Result struct {
	Findings []Finding
	Unseen   []Unseen
}

// Inspect returns everything that does not hold in s, ordered by pod,
// container, GPU and reason. Processes outside any pod of the node are not
// vgpu's to judge and are left out.
func Inspect(s Snapshot, owners Owners, opt Options) Result {
	in := &inspection{s: s, owners: owners, opt: opt,
		byUID:    make(map[string]*pods.Pod, len(s.Pods)),
		usage:    map[Key]map[string]used{},
		noSlot:   map[slotless]used{},
		podOnGPU: map[string]bool{},
	}
	for i := range s.Pods {
		in.byUID[string(s.Pods[i].UID)] = &s.Pods[i]
	}
	in.libvgpuFindings()
	for _, g := range s.GPUs {
		for _, proc := range g.Processes {
			in.process(g, proc)
		}
	}
	in.slotlessFindings()
	for i := range s.Pods {
		if p := &s.Pods[i]; p.Assignment != nil {
			for _, c := range p.Assignment.Containers {
				in.limitFindings(p, c)
			}
		}
	}
	sortFindings(in.out)
	return Result{Findings: in.out, Unseen: in.unseen()}
}

// inspection is one Inspect under way: what it has found so far and the
// sums of NVML's figures that the later checks compare with limits.
type inspection struct {
	s      Snapshot
	owners Owners
	opt    Options
	byUID  map[string]*pods.Pod
	out    []Finding

	usage    map[Key]map[string]used // container -> GPU (upper case) -> NVML's sum
	noSlot   map[slotless]used       // processes without a slot, where libvgpu counts such
	podOnGPU map[string]bool         // pod uid + "/" + GPU (upper case): NVML lists a process
}

func (in *inspection) add(p *pods.Pod, ctr, gpu, reason, format string, args ...any) {
	in.out = append(in.out, Finding{Key: Key{string(p.UID), ctr}, Ref: p.Ref, GPU: gpu, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// libvgpuFindings reports what libvgpu itself wrote in a region: it could
// not enforce, and said why.
func (in *inspection) libvgpuFindings() {
	for key, r := range in.s.Regions {
		p, ok := in.byUID[key.PodUID]
		if !ok || r.Enforced {
			continue
		}
		gs := []string{""} // a region whose device list libvgpu could not fill
		if len(r.Devices) > 0 {
			gs = gs[:0]
			for _, d := range r.Devices {
				gs = append(gs, d.UUID)
			}
		}
		for _, g := range gs {
			in.out = append(in.out, Finding{Key: key, Ref: p.Ref, GPU: g, Reason: r.Reason, Message: r.ReasonText, Libvgpu: true})
		}
	}
}

// process checks one process NVML lists on one GPU against its container's
// region, and adds its memory to the container's sum.
func (in *inspection) process(g gpus.GPU, proc gpus.Process) {
	o, err := in.owners.Owner(proc.PID)
	if err != nil {
		return // gone, or not a pod's
	}
	p, ok := in.byUID[o.PodUID]
	if !ok {
		return
	}
	in.podOnGPU[o.PodUID+"/"+strings.ToUpper(g.UUID)] = true
	ctr, ok := containerOf(p, o, g.UUID, in.s.Regions)
	if !ok {
		return // the kubelet has not reported its id yet: next pass
	}
	if exclusive(p, ctr, g.UUID) {
		return // a whole GPU carries no limit: nobody shares it
	}
	key := Key{string(p.UID), ctr}
	if in.usage[key] == nil {
		in.usage[key] = map[string]used{}
	}
	u := in.usage[key][strings.ToUpper(g.UUID)]
	u.bytes += proc.MemoryUsedBytes
	u.procs++
	in.usage[key][strings.ToUpper(g.UUID)] = u

	if _, bad := in.s.Unreadable[key]; bad {
		return // no slots to compare with; the limit check still holds
	}
	who := fmt.Sprintf("pid %d (%d in the container) holds %s on %s", proc.PID, o.NSPID, amount(proc), g.UUID)
	r, hasRegion := in.s.Regions[key]
	dev := deviceIndex(r, g.UUID)
	switch {
	case !hasRegion:
		in.add(p, ctr, g.UUID, ReasonUnaccountedProcess, "%s and the container has no region: libvgpu is not loaded in it", who)
		return
	case dev < 0:
		in.add(p, ctr, g.UUID, ReasonUnaccountedProcess, "%s, a GPU the container's region does not list", who)
		return
	}
	slot, ok := slotOf(r, o)
	if !ok {
		if r.Devices[dev].UnslottedBytes == 0 {
			in.add(p, ctr, g.UUID, ReasonUnaccountedProcess, "%s and has no slot in the container's region: it does not run libvgpu (a static program, a cleared preload)", who)
			return
		}
		// libvgpu counts processes past its slot table for the container
		// only: slotlessFindings compares them together.
		k := slotless{key, g.UUID}
		u := in.noSlot[k]
		u.bytes += proc.MemoryUsedBytes
		u.procs++
		in.noSlot[k] = u
		return
	}
	var counted uint64
	if dev < len(slot.MemoryUsedBytes) {
		counted = slot.MemoryUsedBytes[dev]
	}
	// Exported memory is counted once for the container, in no slot, and
	// NVML may count it for each process mapping it.
	shared := r.Devices[dev].SharedBytes
	if !proc.MemoryUnknown && proc.MemoryUsedBytes > counted+shared+in.opt.Tolerance {
		in.add(p, ctr, g.UUID, ReasonAboveLedger, "%s; libvgpu counts %s for it and %s shared by the container (tolerance %s)",
			who, inMiB(counted), inMiB(shared), inMiB(in.opt.Tolerance))
	}
}

// slotlessFindings compares the processes past a region's slot table with
// what libvgpu counts for them together.
func (in *inspection) slotlessFindings() {
	for k, u := range in.noSlot {
		p := in.byUID[k.PodUID]
		r := in.s.Regions[k.Key]
		counted := r.Devices[deviceIndex(r, k.gpu)].UnslottedBytes
		if u.bytes > counted+uint64(u.procs)*in.opt.Tolerance {
			in.add(p, k.Container, k.gpu, ReasonUnaccountedProcess,
				"%d processes without a slot in the container's region hold %s on %s; libvgpu counts %s for the processes past its slot table (tolerance %s per process)",
				u.procs, inMiB(u.bytes), k.gpu, inMiB(counted), inMiB(in.opt.Tolerance))
		}
	}
}

// limitFindings checks one assigned container against its limits: its
// ledger and NVML's sum, a region it cannot read, a region it never made.
func (in *inspection) limitFindings(p *pods.Pod, c assign.Container) {
	key := Key{string(p.UID), c.Name}
	var shared []assign.Device // whole GPUs carry no limit
	for _, d := range c.Devices {
		if d.Cores < 100 {
			shared = append(shared, d)
		}
	}
	r, hasRegion := in.s.Regions[key]
	for _, d := range shared {
		u := in.usage[key][strings.ToUpper(d.UUID)]
		limit := uint64(d.MemoryMiB) << 20
		// libvgpu never books past the limit it enforces: a ledger above it
		// was kept by another copy or rewritten.
		if i := deviceIndex(r, d.UUID); hasRegion && i >= 0 && r.Devices[i].MemoryUsedBytes > limit {
			in.add(p, c.Name, d.UUID, ReasonAboveLimit, "libvgpu's ledger counts %s on %s, above its limit of %s",
				inMiB(r.Devices[i].MemoryUsedBytes), d.UUID, inMiB(limit))
		}
		if u.procs > 0 && u.bytes > limit+uint64(u.procs)*in.opt.Tolerance {
			in.add(p, c.Name, d.UUID, ReasonAboveLimit, "its %d processes hold %s on %s, above its limit of %s (tolerance %s per process)",
				u.procs, inMiB(u.bytes), d.UUID, inMiB(limit), inMiB(in.opt.Tolerance))
		}
	}
	if err, bad := in.s.Unreadable[key]; bad {
		for _, d := range shared {
			in.add(p, c.Name, d.UUID, ReasonRegionUnreadable,
				"the container's region cannot be read (%v): its processes cannot be checked one by one, only its total against its limit", err)
		}
		return
	}
	st, ok := p.Containers[c.Name]
	if hasRegion || len(shared) == 0 || !ok || !st.Running || st.Init != c.Init ||
		in.s.Now.Sub(st.StartedAt) < in.opt.RegionGrace {
		return
	}
	for _, d := range shared {
		in.add(p, c.Name, d.UUID, ReasonNoRegion,
			"limits are set but no readable region %s after the container started: libvgpu is not loaded in it (a missing or mismatched host path, an image it cannot load into), or no process has used the GPU yet",
			in.opt.RegionGrace)
	}
}

// unseen lists the containers whose region counts memory on a GPU where
// NVML lists none of their pod's processes.
func (in *inspection) unseen() []Unseen {
	var unseen []Unseen
	listed := map[string]bool{}
	for _, g := range in.s.GPUs {
		listed[strings.ToUpper(g.UUID)] = true
	}
	for key, r := range in.s.Regions {
		if _, live := in.byUID[key.PodUID]; !live {
			continue
		}
		for _, d := range r.Devices {
			up := strings.ToUpper(d.UUID)
			if d.MemoryUsedBytes > 0 && listed[up] && !in.podOnGPU[key.PodUID+"/"+up] {
				unseen = append(unseen, Unseen{Key: key, GPU: d.UUID})
			}
		}
	}
	sort.Slice(unseen, func(i, j int) bool {
		a, b := unseen[i], unseen[j]
		return a.PodUID+"/"+a.Container+"/"+a.GPU < b.PodUID+"/"+b.Container+"/"+b.GPU
	})
	return unseen
}

// exclusive reports whether the container was given the GPU whole (cores
// 100): it shares it with nobody and has no limit on it to get around.
func exclusive(p *pods.Pod, ctr, gpu string) bool {
	if p.Assignment == nil {
		return false
	}
	for _, c := range p.Assignment.Containers {
		if c.Name != ctr {
			continue
		}
		for _, d := range c.Devices {
			if strings.EqualFold(d.UUID, gpu) && d.Cores >= 100 {
				return true
			}
		}
	}
	return false
}

// containerOf names the container a process runs in: by the runtime id in
// its cgroup, which the pod's status lists; before the kubelet has reported
// it, by a region slot holding the process, or by the pod having a single
// candidate container.
func containerOf(p *pods.Pod, o procs.Owner, gpu string, rs map[Key]regions.Region) (string, bool) {
	if o.ContainerID != "" {
		for name, c := range p.Containers {
			if c.ID == o.ContainerID {
				return name, true
			}
		}
	}
	var bySlot []string
	for key, r := range rs {
		if key.PodUID != string(p.UID) {
			continue
		}
		if _, ok := slotOf(r, o); ok {
			bySlot = append(bySlot, key.Container)
		}
	}
	if len(bySlot) == 1 {
		return bySlot[0], true
	}
	if p.Assignment != nil {
		var onGPU []string
		for _, c := range p.Assignment.Containers {
			for _, d := range c.Devices {
				if strings.EqualFold(d.UUID, gpu) {
					onGPU = append(onGPU, c.Name)
				}
			}
		}
		if len(onGPU) == 1 && len(bySlot) == 0 {
			return onGPU[0], true
		}
	}
	return "", false
}

// slotOf finds the process's slot: same pid in the container's namespace
// and, where both are known, the same start time, so a slot left by a dead
// process whose pid was reused does not cover the newcomer.
func slotOf(r regions.Region, o procs.Owner) (regions.Process, bool) {
	for _, s := range r.Processes {
		if s.PID == o.NSPID && (s.StartTime == 0 || o.StartTime == 0 || s.StartTime == o.StartTime) {
			return s, true
		}
	}
	return regions.Process{}, false
}

// deviceIndex finds a GPU among the region's devices; uuids compare as the
// driver compares them, without regard to case.
func deviceIndex(r regions.Region, uuid string) int {
	for i, d := range r.Devices {
		if strings.EqualFold(d.UUID, uuid) {
			return i
		}
	}
	return -1
}

func sortFindings(fs []Finding) {
	sort.Slice(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Ref.Namespace != b.Ref.Namespace {
			return a.Ref.Namespace < b.Ref.Namespace
		}
		if a.Ref.Name != b.Ref.Name {
			return a.Ref.Name < b.Ref.Name
		}
		return a.id() < b.id()
	})
}

func amount(p gpus.Process) string {
	if p.MemoryUnknown {
		return "GPU memory (NVML does not say how much)"
	}
	return inMiB(p.MemoryUsedBytes)
}

func inMiB(b uint64) string { return fmt.Sprintf("%d MiB", b>>20) }
