package placement

import (
	"math"
	"math/bits"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vgpu-io/vgpu/lib/request"
)

// Mix learns, online, the distribution of pod shapes a cluster receives:
// decayed counts of shapes (how many vGPUs, what share of each or whole
// GPUs, the GPU models allowed, and the CPU and host memory asked for).
// The fragmentation policy measures a node's fragmentation against it
// (docs/placement.md). Observe is called for every pod that arrives, in
// arrival order; nothing is known of later pods.
//
// Counting is O(1) per pod. The distribution the policy scores against,
// a frozen Snapshot, is rebuilt only now and then (see Observe), because
// the simulator memoises node scores per snapshot and the extender's
// scoring must not take a lock. A Mix is safe for concurrent use.
type Mix struct {
	opts MixOptions

	mu      sync.Mutex
	entries map[shapeKey]*mixEntry
	// inc is the weight of the next observation: it grows by 2^(1/half
	// life) per pod, which decays every older count relative to it without
	// touching them; all weights are rescaled before it overflows.
	inc, growth float64
	seen, since int
	gen         uint64
	snap        atomic.Pointer[Snapshot]
	// cache holds, per node name, the node's fragmentation as it stands
	// (*nodeFrag), for one snapshot, node version and host state.
	cache sync.Map
}

// MixOptions tune what a Mix learns.
type MixOptions struct {
	// HalfLife is the number of arrivals after which a pod's weight has
	// halved; 0 never forgets.
	HalfLife int
	// ExactCPU keys shapes by their exact CPU request instead of a
	// power-of-two class (the FGD paper's typical pods do).
	ExactCPU bool
	// CPUOnlyHost checks only CPU, not host memory, when it asks whether a
	// node can host a shape (the FGD paper does).
	CPUOnlyHost bool
	// PaperMeasure measures a node's fragmentation for a shape as the FGD
	// paper does alone, without the fill view (see fitter.expected).
	PaperMeasure bool
	// NoTieBreak leaves equal fragmentation deltas tied instead of
	// preferring the fuller node (the FGD paper does).
	NoTieBreak bool
}

// DefaultHalfLife is the learned distribution's memory in arrivals: long
// enough that a burst of one shape does not erase the rest of the mix,
// short enough to follow a cluster whose workload changes over a day.
const DefaultHalfLife = 2048

// Refresh schedule: the first snapshot is built after refreshFirst pods
// (before, the policy has no mix and packs, as binpack), then whenever the
// pods since the last one reach refreshFraction of all seen (so after 64,
// 128, 256, 512 and 1,024 pods) and then every refreshEvery pods. A new
// snapshot is kept only if the mix moved (see moved). Between snapshots a
// node's fragmentation can be memoised, and a few hundred pods move the
// learned weights by well under a percent each once a thousand or so have
// been seen.
const (
	refreshFirst    = 1
	refreshEvery    = 2048
	refreshFraction = 0.5
)

// Snapshot limits: the classes scored are the most frequent shapes that
// together make up snapshotCoverage of the weight, at most snapshotMax;
// the rest are rare enough not to steer placement, and the cost of a
// score grows with the number kept.
const (
	snapshotCoverage = 0.995
	snapshotMax      = 64
)

// NewMix returns an empty Mix.
func NewMix(o MixOptions) *Mix {
	m := &Mix{opts: o, entries: map[shapeKey]*mixEntry{}, inc: 1, growth: 1}
	if o.HalfLife > 0 {
		m.growth = math.Exp2(1 / float64(o.HalfLife))
	}
	m.snap.Store(&Snapshot{opts: o})
	return m
}

// shapeKey is what makes two pods the same shape.
type shapeKey struct {
	gpus   int
	cores  int
	memPct int
	memMiB int64
	whole  bool
	types  string // use-gputype, then "!" and nouse-gputype, lower case
	cpu    int64  // CPU class (half powers of two of cores) or exact milli
	mem    int64  // memory class (half powers of two of GiB)
}

// halfLog2 classes x by half powers of two: 0 for 0, then 1, 2, 3 for 1,
// 2, 3, and one class per factor √2 above, so that a class's mean stays
// within about 20 % of its members' requests.
func halfLog2(x int64) int64 {
	if x <= 0 {
		return 0
	}
	l := int64(bits.Len64(uint64(x))) // 2^(l-1) <= x < 2^l
	half := int64(0)
	if float64(x) >= math.Sqrt2*float64(int64(1)<<(l-1)) {
		half = 1
	}
	return 2*l + half
}

type mixEntry struct {
	key  shapeKey
	sel  request.Selector
	w    float64
	cpuW float64 // Σ weight × CPU milli, for the class's mean
	memW float64 // Σ weight × memory MiB
}

// shapeOf summarises a pod: its vGPU count (as kube-scheduler counts
// nvidia.com/gpu) and the largest per-vGPU demand of its containers. That
// is exact for single-container pods and close for the others.
func (m *Mix) shapeOf(p *request.Pod) (shapeKey, request.Selector) {
	k := shapeKey{gpus: PodVGPUs(p)}
	for i := range p.Containers {
		c := &p.Containers[i]
		k.cores = max(k.cores, c.Cores)
		k.memPct = max(k.memPct, c.MemoryPercent)
		k.memMiB = max(k.memMiB, c.MemoryMiB)
		k.whole = k.whole || c.Exclusive
	}
	if k.whole {
		k.cores, k.memPct, k.memMiB = 0, 0, 0
	} else if k.gpus > 0 && k.memPct == 0 && k.memMiB == 0 {
		k.memPct = 100 // no memory resource: the whole memory of the GPU
	}
	sel := request.Selector{UseTypes: p.Selector.UseTypes, NoUseTypes: p.Selector.NoUseTypes}
	if len(sel.UseTypes)+len(sel.NoUseTypes) > 0 {
		k.types = strings.ToLower(strings.Join(sel.UseTypes, ",") + "!" + strings.Join(sel.NoUseTypes, ","))
	}
	if m.opts.ExactCPU {
		k.cpu = p.HostCPUMilli
	} else {
		k.cpu = halfLog2(p.HostCPUMilli / 1000)
	}
	k.mem = halfLog2(p.HostMemoryMiB >> 10)
	return k, sel
}

// PodVGPUs is the pod's nvidia.com/gpu as kube-scheduler counts it
// (request.Pod.VGPUs).
func PodVGPUs(p *request.Pod) int { return p.VGPUs() }

// Observe counts one arriving pod; a pod without containers is CPU-only
// (its HostCPUMilli and HostMemoryMiB still count). It rebuilds the
// snapshot on the refresh schedule and reports whether it did.
func (m *Mix) Observe(p *request.Pod) bool {
	k, sel := m.shapeOf(p)
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[k]
	if e == nil {
		e = &mixEntry{key: k, sel: sel}
		m.entries[k] = e
	}
	e.w += m.inc
	e.cpuW += m.inc * float64(p.HostCPUMilli)
	e.memW += m.inc * float64(p.HostMemoryMiB)
	m.inc *= m.growth
	if m.inc > 1e100 {
		for _, e := range m.entries {
			e.w /= m.inc
			e.cpuW /= m.inc
			e.memW /= m.inc
		}
		m.inc = 1
	}
	m.seen++
	m.since++
	if float64(m.since) >= min(refreshEvery, math.Max(refreshFirst, refreshFraction*float64(m.seen))) {
		m.refreshLocked()
		return true
	}
	return false
}

// Refresh rebuilds the snapshot now (after a restart has replayed the
// running pods, say).
func (m *Mix) Refresh() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refreshLocked()
}

// Forget drops what the mix cached of a node (the node was deleted).
func (m *Mix) Forget(node string) { m.cache.Delete(node) }

// Snapshot is the distribution the policy currently scores against.
func (m *Mix) Snapshot() *Snapshot { return m.snap.Load() }

// Seen is how many pods were observed.
func (m *Mix) Seen() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seen
}

func (m *Mix) refreshLocked() {
	m.since = 0
	list := make([]*mixEntry, 0, len(m.entries))
	total := 0.0
	for _, e := range m.entries {
		if e.key.gpus == 0 {
			// CPU-only pods strand no GPU: they change no node's
			// fragmentation, only which pods arrive (docs/placement.md).
			continue
		}
		list = append(list, e)
		total += e.w
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].w != list[j].w {
			return list[i].w > list[j].w
		}
		return lessKey(list[i].key, list[j].key)
	})
	s := &Snapshot{Gen: m.gen + 1, opts: m.opts}
	kept := 0.0
	classOf := map[shapeKey]int{}
	for _, e := range list {
		if kept >= snapshotCoverage*total || len(s.shapes) >= snapshotMax {
			break
		}
		kept += e.w
		ck := e.key
		ck.cpu, ck.mem = 0, 0
		ci, ok := classOf[ck]
		if !ok {
			ci = len(s.classes)
			classOf[ck] = ci
			c := fragClass{gpus: e.key.gpus, whole: e.key.whole, sel: e.sel, selectAll: e.sel.Empty(),
				ctr: request.Container{Count: 1, Cores: e.key.cores, MemoryPercent: e.key.memPct, MemoryMiB: e.key.memMiB, Exclusive: e.key.whole}}
			s.classes = append(s.classes, c)
		}
		s.shapes = append(s.shapes, fragShape{key: e.key, class: ci, w: e.w, cpu: int64(e.cpuW / e.w), mem: int64(e.memW / e.w)})
	}
	for i := range s.shapes {
		sh := &s.shapes[i]
		sh.p = sh.w / kept
		if sh.cpu > 0 {
			sh.invCPU = 1 / float64(sh.cpu)
		}
		if sh.mem > 0 {
			sh.invMem = 1 / float64(sh.mem)
		}
	}
	for i := range s.shapes {
		s.classes[s.shapes[i].class].p += s.shapes[i].p
	}
	groupOf := map[request.Container]int{}
	for i := range s.classes {
		c := &s.classes[i]
		g, ok := groupOf[c.ctr]
		if !ok {
			g = len(groupOf)
			groupOf[c.ctr] = g
		}
		c.group = g
		c.invGPUs = 1 / float64(c.gpus)
		if c.ctr.Cores > 0 {
			c.invCores = 1 / float64(c.ctr.Cores)
		}
		c.coreFrac = float64(c.ctr.Cores) / 100
		c.memFrac = float64(c.ctr.MemoryPercent) / 100
		c.memMiB = float64(c.ctr.MemoryMiB)
	}
	s.groups = len(groupOf)
	// Group the shapes by class, so that a node's GPUs are tested once per
	// class and its CPU and memory once per shape.
	sort.SliceStable(s.shapes, func(i, j int) bool { return s.shapes[i].class < s.shapes[j].class })
	if !moved(m.snap.Load(), s) {
		return
	}
	m.gen++
	m.snap.Store(s)
}

// minMove is the total variation distance between two snapshots below
// which the newer one is dropped: the policy's choices would barely change,
// while every memoised score (the simulator's) would have to be redone.
// With the default half-life, sampling noise alone moves a stationary mix
// of a few dozen shapes by 1–2 % between refreshes; a real change of the
// workload moves it by more.
const minMove = 0.05

// moved reports whether next differs from cur by minMove or more in total
// variation (a shape missing from one counts with probability 0 there), or
// by a tenth in the mean CPU or memory of a shape that both hold with
// probability 1 % or more.
func moved(cur, next *Snapshot) bool {
	old := make(map[shapeKey]*fragShape, len(cur.shapes))
	for i := range cur.shapes {
		old[cur.shapes[i].key] = &cur.shapes[i]
	}
	tv := 0.0
	for i := range next.shapes {
		b := &next.shapes[i]
		a := old[b.key]
		if a == nil {
			tv += b.p
			continue
		}
		if min(a.p, b.p) >= 0.01 && (drift(a.cpu, b.cpu) || drift(a.mem, b.mem)) {
			return true
		}
		tv += math.Abs(a.p - b.p)
		delete(old, b.key)
	}
	for _, a := range old {
		tv += a.p
	}
	return tv/2 >= minMove
}

func drift(a, b int64) bool { return math.Abs(float64(a-b)) > 0.1*math.Max(float64(a), float64(b)) }

func lessKey(a, b shapeKey) bool {
	switch {
	case a.gpus != b.gpus:
		return a.gpus < b.gpus
	case a.cores != b.cores:
		return a.cores < b.cores
	case a.memPct != b.memPct:
		return a.memPct < b.memPct
	case a.memMiB != b.memMiB:
		return a.memMiB < b.memMiB
	case a.whole != b.whole:
		return b.whole
	case a.types != b.types:
		return a.types < b.types
	case a.cpu != b.cpu:
		return a.cpu < b.cpu
	}
	return a.mem < b.mem
}

// Snapshot is a frozen distribution of pod shapes: classes of GPU demand
// (vGPU count, per-vGPU share or whole GPU, allowed models) and, within
// each, the host demands (CPU, memory) with their probabilities.
type Snapshot struct {
	// Gen numbers the snapshots of one Mix; a memo of scores is valid for
	// one Gen.
	Gen     uint64
	opts    MixOptions
	classes []fragClass
	groups  int
	shapes  []fragShape
}

// Len is the number of shapes scored against.
func (s *Snapshot) Len() int { return len(s.shapes) }

type fragClass struct {
	p         float64 // the probability of its shapes together
	group     int     // classes that differ only in the models they allow
	gpus      int
	invGPUs   float64
	invCores  float64 // 1 / cores, 0 without a cores limit
	coreFrac  float64 // cores / 100
	memFrac   float64 // memory percentage / 100
	memMiB    float64
	whole     bool
	ctr       request.Container // one vGPU's demand
	sel       request.Selector
	selectAll bool
}

type fragShape struct {
	key            shapeKey
	class          int
	w, p           float64
	cpu, mem       int64
	invCPU, invMem float64
}
