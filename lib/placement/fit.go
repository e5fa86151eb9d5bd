package placement

import (
	"fmt"
	"strings"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// reasonTerse is a terse fitter's reason for a failed fit.
const reasonTerse = "the pod does not fit"

const reasonNoInventory = "node publishes no vGPU inventory (" + contract.AnnotationDevices + " annotation)"

// own is what the pod being placed takes on one GPU.
type own struct {
	slots int
	mem   int64
	cores int
	excl  bool
}

// pick is one vGPU of one container: container index, GPU index, amounts.
type pick struct {
	c, g  int
	mem   int64
	cores int
}

// fitter places one pod on one node at a time. Its scratch slices are
// reused from node to node so that filtering thousands of nodes allocates
// nothing per node.
type fitter struct {
	pod *request.Pod
	gpu settings.Policy
	// selectAll is set when the pod's selector restricts nothing.
	selectAll bool
	// terse skips counting why a pod does not fit (reasonTerse instead),
	// for callers that only rank nodes: on type-constrained workloads most
	// nodes fail, and formatting their reasons cost more than scoring.
	terse bool
	// invSplit is 1/split count of the node being fitted.
	invSplit float64

	app  []own // sum of the app containers and sidecars, per GPU
	init []own // max of the init containers with their sidecars, per GPU
	// side is, while an ordinary init container is placed, the sidecars
	// declared before it, per GPU: they run beside it.
	side  []own
	cand  []int
	loads []float64
	picks []pick

	// The fragmentation policy's learned mix, scratch space, and the
	// node's CPU and memory (from hostFn, or set by a Scorer).
	mix    *Mix
	frag   fragScratch
	keys   []float64
	host   HostFree
	hostFn func(node string) HostFree
}

func newFitter(pod *request.Pod, pol Policies) *fitter {
	f := &fitter{pod: pod, gpu: pol.GPU, selectAll: pod.Selector.Empty(), hostFn: pol.Host}
	if pol.Mix != nil && (pol.GPU == settings.Fragmentation || pol.Node == settings.Fragmentation) {
		f.mix = pol.Mix
		f.useSnapshot(pol.Mix.Snapshot())
	}
	return f
}

// allTwins reports whether every candidate GPU is in the same state, so
// that the fragmentation policy cannot tell them apart.
func (f *fitter) allTwins(v *ledger.View) bool {
	for k := 1; k < len(f.cand); k++ {
		if _, ok := f.twin(v, f.cand[k], f.cand[:1]); !ok {
			return false
		}
	}
	return true
}

// fragmenting reports whether the GPU policy is fragmentation with a mix
// to measure against.
func (f *fitter) fragmenting() bool {
	return f.gpu == settings.Fragmentation && f.frag.snap != nil && len(f.frag.snap.classes) > 0
}

func (f *fitter) reset(n int) {
	if cap(f.app) < n {
		f.app = make([]own, n)
		f.init = make([]own, n)
		f.side = make([]own, n)
		f.cand = make([]int, 0, n)
		f.loads = make([]float64, n)
		f.keys = make([]float64, n)
	}
	f.keys = f.keys[:n]
	f.app = f.app[:n]
	f.init = f.init[:n]
	f.side = f.side[:n]
	f.loads = f.loads[:n]
	clear(f.app)
	clear(f.init)
	clear(f.side)
	f.picks = f.picks[:0]
}

// fit places the pod on v, greedily in container order (app containers
// and sidecars, then ordinary init containers), each container's vGPUs on the GPUs its policy
// prefers. It returns "" on success and the reason otherwise.
func (f *fitter) fit(v *ledger.View) string {
	if !v.Known {
		return reasonNoInventory
	}
	f.reset(len(v.GPUs))
	f.invSplit = 1 / float64(v.SplitCount)
	if f.mix != nil {
		// A fitter kept across pods (a Scorer) follows the mix.
		if s := f.mix.Snapshot(); s != f.frag.snap {
			f.useSnapshot(s)
		}
	}
	if f.frag.snap != nil {
		f.frag.resetAfter(len(v.GPUs))
	}
	if f.hostFn != nil {
		f.host = f.hostFn(v.Name)
	}
	for pass := 0; pass < 2; pass++ {
		withApp := pass == 0
		for ci := range f.pod.Containers {
			c := &f.pod.Containers[ci]
			if c.RunsWithApp() != withApp {
				continue
			}
			if r := f.place(v, ci, c); r != "" {
				return r
			}
		}
	}
	return ""
}

// take is what container c asks of GPU g.
func take(c *request.Container, memMiB int64) own {
	return own{slots: 1, mem: c.MemoryOn(memMiB), cores: c.CoresOn(), excl: c.Exclusive}
}

// after is what the pod would hold on GPU g if container c took it.
func (f *fitter) after(g int, c *request.Container, t own) own {
	if !c.RunsWithApp() {
		// Ordinary init containers run before the app containers, each
		// beside the sidecars declared before it (docs/contract.md).
		a, o, s := f.app[g], f.init[g], f.side[g]
		return own{slots: max(a.slots, o.slots, s.slots+1), mem: max(a.mem, o.mem, s.mem+t.mem), cores: max(a.cores, o.cores, s.cores+t.cores), excl: a.excl || o.excl || t.excl}
	}
	a := f.app[g]
	o := own{slots: a.slots + 1, mem: a.mem + t.mem, cores: a.cores + t.cores, excl: a.excl || t.excl}
	i := f.init[g]
	return own{slots: max(o.slots, i.slots), mem: max(o.mem, i.mem), cores: max(o.cores, i.cores), excl: o.excl || i.excl}
}

// Reasons a GPU cannot take a container's vGPU, in the order they are tested.
const (
	whyUnhealthy = iota
	whySelector
	whyHeldWhole
	whyNotWhole
	whySlots
	whyMemory
	whyCores
	whyCount
)

// why returns -1 if container c's vGPU can go on GPU g, else the reason;
// on success also the GPU's load with it placed.
func (f *fitter) why(v *ledger.View, g int, c *request.Container) (int, float64) {
	gpu := &v.GPUs[g]
	if !gpu.Healthy {
		return whyUnhealthy, 0
	}
	if !f.selectAll && !f.pod.Selector.Allows(gpu.Model, gpu.UUID) {
		return whySelector, 0
	}
	base := &v.Used[g]
	if base.Exclusive > 0 {
		return whyHeldWhole, 0
	}
	// with is what the pod runs on g at the same time as c.
	with := &f.side[g]
	if c.RunsWithApp() {
		with = &f.app[g]
	}
	if with.excl {
		return whyHeldWhole, 0
	}
	if c.Exclusive && (base.Pods > 0 || with.slots > 0) {
		return whyNotWhole, 0
	}
	a := f.after(g, c, take(c, gpu.MemoryMiB))
	if base.Slots+a.slots > v.SplitCount {
		return whySlots, 0
	}
	memCap := ledger.MemoryCapacity(gpu.MemoryMiB, v.MemoryScaling)
	if base.MemoryMiB+a.mem > memCap {
		return whyMemory, 0
	}
	if base.Cores+a.cores > 100 {
		return whyCores, 0
	}
	return -1, load(base, a, f.invSplit, memCap)
}

func (f *fitter) place(v *ledger.View, ci int, c *request.Container) string {
	if !c.RunsWithApp() {
		f.sidecarsBefore(ci)
	}
	f.cand = f.cand[:0]
	for g := range v.GPUs {
		if w, l := f.why(v, g, c); w < 0 {
			f.cand = append(f.cand, g)
			f.loads[g] = l
		}
	}
	if len(f.cand) < c.Count {
		if f.terse {
			return reasonTerse
		}
		return f.reason(v, c)
	}
	ordered := false
	if f.fragmenting() && !f.allTwins(v) {
		f.fragGPUOrder(v, func(g int) own { return f.after(g, c, take(c, v.GPUs[g].MemoryMiB)) })
		ordered = true
	}
	// Choose c.Count candidates: the fullest (binpack) or emptiest (spread)
	// after placement, ties to the lower inventory position. A partial
	// selection sort: Count and the GPU count are small.
	for k := 0; k < c.Count; k++ {
		best := k
		for j := k + 1; j < len(f.cand); j++ {
			if f.better(f.cand[j], f.cand[best], ordered) {
				best = j
			}
		}
		f.cand[k], f.cand[best] = f.cand[best], f.cand[k]
	}
	for _, g := range f.cand[:c.Count] {
		t := take(c, v.GPUs[g].MemoryMiB)
		if !c.RunsWithApp() {
			o, s := &f.init[g], f.side[g]
			o.slots, o.mem, o.cores, o.excl = max(o.slots, s.slots+1), max(o.mem, s.mem+t.mem), max(o.cores, s.cores+t.cores), o.excl || t.excl
		} else {
			o := &f.app[g]
			o.slots, o.mem, o.cores, o.excl = o.slots+1, o.mem+t.mem, o.cores+t.cores, o.excl || t.excl
		}
		f.picks = append(f.picks, pick{c: ci, g: g, mem: t.mem, cores: t.cores})
	}
	return ""
}

// sidecarsBefore sets f.side to the picks of the sidecars declared before
// container ci. Sidecars are placed in the first pass, so all are known.
func (f *fitter) sidecarsBefore(ci int) {
	clear(f.side)
	for _, p := range f.picks {
		if p.c < ci && f.pod.Containers[p.c].Sidecar {
			s := &f.side[p.g]
			s.slots, s.mem, s.cores = s.slots+1, s.mem+p.mem, s.cores+p.cores
			s.excl = s.excl || f.pod.Containers[p.c].Exclusive
		}
	}
}

func (f *fitter) better(a, b int, ordered bool) bool {
	if ordered && f.keys[a] != f.keys[b] {
		return f.keys[a] > f.keys[b]
	}
	la, lb := f.loads[a], f.loads[b]
	if la != lb {
		if f.gpu == settings.Spread {
			return la < lb
		}
		return la > lb
	}
	return a < b
}

// load is how full GPU g would be, 0..1: its fullest dimension among vGPU
// slots, memory and cores; 1 when held whole. It runs for every GPU of every
// node filtered, so it divides once at most.
func load(base *ledger.Usage, o own, invSplit float64, memCap int64) float64 {
	if base.Exclusive > 0 || o.excl {
		return 1
	}
	l := float64(base.Slots+o.slots) * invSplit
	if c := float64(base.Cores+o.cores) * 0.01; c > l {
		l = c
	}
	if mem := float64(base.MemoryMiB + o.mem); mem > l*float64(memCap) {
		l = mem / float64(memCap)
	}
	return min(l, 1)
}

// nodeLoad is the mean load of the node's healthy GPUs with the pod placed.
// A node without a healthy GPU has no GPU capacity to spare: it counts as
// full. Only a pod that asks for no GPU can fit there (the simulator ranks
// CPU-only pods by the node policy), and binpack then prefers such a node
// to one whose free GPUs the pod's CPU would strand.
func (f *fitter) nodeLoad(v *ledger.View) float64 {
	sum, n := 0.0, 0
	for g := range v.GPUs {
		if !v.GPUs[g].Healthy {
			continue
		}
		a, i := f.app[g], f.init[g]
		o := own{slots: max(a.slots, i.slots), mem: max(a.mem, i.mem), cores: max(a.cores, i.cores), excl: a.excl || i.excl}
		sum += load(&v.Used[g], o, f.invSplit, ledger.MemoryCapacity(v.GPUs[g].MemoryMiB, v.MemoryScaling))
		n++
	}
	if n == 0 {
		return 1
	}
	return sum / float64(n)
}

// reason explains, with counts, why container c found too few GPUs.
func (f *fitter) reason(v *ledger.View, c *request.Container) string {
	var counts [whyCount]int
	fit := 0
	for g := range v.GPUs {
		if w, _ := f.why(v, g, c); w >= 0 {
			counts[w]++
		} else {
			fit++
		}
	}
	n := len(v.GPUs)
	var b strings.Builder
	what := "container"
	if c.Sidecar {
		what = "sidecar container"
	} else if c.Init {
		what = "init container"
	}
	if n == 0 {
		fmt.Fprintf(&b, "%s %q needs %d GPU(s): the node has no GPUs", what, c.Name, c.Count)
		return b.String()
	}
	fmt.Fprintf(&b, "%s %q needs %d GPU(s), %d of %d fit", what, c.Name, c.Count, fit, n)
	add := func(w int, format string, args ...any) {
		if counts[w] == 0 {
			return
		}
		b.WriteString("; ")
		fmt.Fprintf(&b, format, append([]any{counts[w], n}, args...)...)
	}
	add(whyUnhealthy, "%d of %d GPUs are unhealthy")
	add(whySelector, "%d of %d GPUs are excluded by the pod's use/nouse-gputype or gpuuuid annotations")
	add(whyHeldWhole, "%d of %d GPUs are held whole by another pod")
	add(whyNotWhole, "%d of %d GPUs are in use, and the container needs whole GPUs")
	add(whySlots, "no free vGPU slot: %d of %d GPUs already hold %d vGPUs (split count)", v.SplitCount)
	switch {
	case c.MemoryMiB > 0:
		add(whyMemory, "insufficient GPU memory: %d of %d GPUs have < %d MiB free", c.MemoryMiB)
	case c.MemoryPercent > 0:
		add(whyMemory, "insufficient GPU memory: %d of %d GPUs have < %d %% of their memory free", c.MemoryPercent)
	default:
		add(whyMemory, "insufficient GPU memory: %d of %d GPUs are partly in use, and the container takes all of a GPU's memory (set nvidia.com/gpumem)")
	}
	add(whyCores, "insufficient GPU cores: %d of %d GPUs have < %d %% of their cores free", c.Cores)
	return b.String()
}

// assignment renders the picks of the last successful fit.
func (f *fitter) assignment(v *ledger.View) assign.Pod {
	a := assign.Pod{Node: v.Name, Containers: make([]assign.Container, 0, len(f.pod.Containers))}
	for ci := range f.pod.Containers {
		c := &f.pod.Containers[ci]
		ac := assign.Container{Name: c.Name, Init: c.Init, Sidecar: c.Sidecar, Devices: make([]assign.Device, 0, c.Count)}
		for _, p := range f.picks {
			if p.c == ci {
				ac.Devices = append(ac.Devices, assign.Device{UUID: v.GPUs[p.g].UUID, MemoryMiB: p.mem, Cores: p.cores})
			}
		}
		a.Containers = append(a.Containers, ac)
	}
	return a
}
