package placement

import (
	"math"

	"github.com/vgpu-io/vgpu/lib/ledger"
)

// The fragmentation policy (docs/placement.md): a node's fragmentation,
// for one pod shape, is the GPU capacity on it that this shape could not
// use: all of the node's free GPU capacity if the shape cannot go there at
// all (too few GPUs that fit it, a GPU model it does not allow, too little
// CPU or host memory left), else the free capacity of the GPUs too full
// for it. Its expected value over the learned mix of shapes (Mix) is the
// node's fragmentation; the policy places a pod where that grows the least
// (the measure of Weng et al., "Beware of Fragmentation", ATC '23).
//
// A GPU's free capacity is 1 minus its load (its fullest dimension among
// vGPU slots, memory and cores); a GPU full in any dimension, held whole
// or unhealthy has none.

// HostFree is what a node has left of CPU and host memory before the pod;
// Known false means the caller does not track it (no shape is then turned
// away for lack of CPU or memory).
type HostFree struct {
	CPUMilli, MemoryMiB int64
	Known               bool
}

// gpuState is one GPU as the fragmentation measure sees it.
type gpuState struct {
	free   float64
	slots  int
	cores  int
	mem    int64
	memCap int64
	pods   int
}

// fragScratch is the fitter's per-class scratch space for one snapshot.
type fragScratch struct {
	snap   *Snapshot
	models []string
	// allow[c*len(models)+m]: 0 unknown, 1 allowed, 2 not.
	allow []uint8
	// Per class, over the node's GPUs, after the pod.
	accA []classAcc
	// contrib's results per group of classes, valid while stamp is, for
	// GPU lastG in state lastSt.
	grpStamp []uint64
	grpN     []int
	grpU     []float64
	stamp    uint64
	lastG    int
	lastSt   gpuState
}

// classAcc sums, for one class over a node's GPUs: how many of its vGPUs
// would fit (n) and the capacity they would use (u); for the paper's
// measure, how many GPUs take at least one (cnt) and the free capacity of
// those that take none (frag).
type classAcc struct {
	cnt  int
	frag float64
	n, u float64
}

// useSnapshot makes the fitter measure against s, dropping what it
// derived from the previous snapshot.
func (f *fitter) useSnapshot(s *Snapshot) {
	f.frag.snap = s
	f.frag.models, f.frag.allow = f.frag.models[:0], f.frag.allow[:0]
	if s == nil {
		return
	}
	f.frag.accA = make([]classAcc, len(s.classes))
	f.frag.grpStamp, f.frag.grpN, f.frag.grpU = make([]uint64, s.groups), make([]int, s.groups), make([]float64, s.groups)
	f.frag.stamp, f.frag.lastG = 1, -1
}

// modelAllows reports whether class c admits a GPU of this model.
func (f *fitter) modelAllows(c int, model string) bool {
	cl := &f.frag.snap.classes[c]
	if cl.selectAll {
		return true
	}
	m := -1
	for i, x := range f.frag.models {
		if x == model {
			m = i
			break
		}
	}
	if m < 0 {
		m = len(f.frag.models)
		f.frag.models = append(f.frag.models, model)
		old, nm := f.frag.allow, len(f.frag.models)
		f.frag.allow = make([]uint8, len(f.frag.snap.classes)*nm)
		for ci := range f.frag.snap.classes {
			copy(f.frag.allow[ci*nm:ci*nm+nm-1], old[ci*(nm-1):ci*(nm-1)+nm-1])
		}
	}
	i := c*len(f.frag.models) + m
	if f.frag.allow[i] == 0 {
		f.frag.allow[i] = 2
		if cl.sel.Allows(model, "") {
			f.frag.allow[i] = 1
		}
	}
	return f.frag.allow[i] == 1
}

// state is GPU g of v with o added (o zero: as it stands).
func (f *fitter) state(v *ledger.View, g int, o own) gpuState {
	base := &v.Used[g]
	if !v.GPUs[g].Healthy || base.Exclusive > 0 || o.excl {
		return gpuState{}
	}
	memCap := ledger.MemoryCapacity(v.GPUs[g].MemoryMiB, v.MemoryScaling)
	st := gpuState{
		free:  1 - load(base, o, f.invSplit, memCap),
		slots: base.Slots + o.slots, cores: base.Cores + o.cores, mem: base.MemoryMiB + o.mem,
		pods: base.Pods, memCap: memCap,
	}
	if o.slots > 0 {
		st.pods++
	}
	return st
}

// add adds (sign +1) or removes (-1) GPU g in state st to class c's sums.
func (f *fitter) add(acc *classAcc, v *ledger.View, g, c int, st *gpuState, sign int) {
	if st.free <= 0 {
		return
	}
	n, u := f.contrib(v, g, c, st)
	acc.put(n, u, st.free, sign)
}

func (acc *classAcc) put(n int, u, free float64, sign int) {
	if n > 0 {
		acc.cnt += sign
	} else {
		acc.frag += float64(sign) * free
	}
	acc.n += float64(sign * n)
	acc.u += float64(sign) * u
}

// contrib is how many of class c's vGPUs GPU g in state st would take, and
// the capacity they would use. Classes that differ only in the GPU models
// they allow share the arithmetic: callers go through the classes for one
// GPU state at a time, and the result is kept per group of such classes
// until the state changes.
func (f *fitter) contrib(v *ledger.View, g, c int, st *gpuState) (n int, u float64) {
	if !f.modelAllows(c, v.GPUs[g].Model) {
		return 0, 0
	}
	fs := &f.frag
	if g != fs.lastG || *st != fs.lastSt {
		fs.stamp++
		fs.lastG, fs.lastSt = g, *st
	}
	cl := &fs.snap.classes[c]
	if fs.grpStamp[cl.group] == fs.stamp {
		return fs.grpN[cl.group], fs.grpU[cl.group]
	}
	n, u = f.compute(v, g, cl, st)
	fs.grpStamp[cl.group], fs.grpN[cl.group], fs.grpU[cl.group] = fs.stamp, n, u
	return n, u
}

func (f *fitter) compute(v *ledger.View, g int, cl *fragClass, st *gpuState) (n int, u float64) {
	{
		if cl.whole {
			if st.pods == 0 {
				n, u = 1, st.free
			}
		} else {
			// Floating point: this runs for every class on every GPU
			// scored, and a measure need not be exact at the boundary.
			fn := float64(v.SplitCount - st.slots)
			if cl.invCores > 0 {
				fn = min(fn, math.Floor(float64(100-st.cores)*cl.invCores+1e-9))
			}
			mem := cl.memMiB
			if cl.memFrac > 0 {
				mem = math.Floor(float64(v.GPUs[g].MemoryMiB) * cl.memFrac)
			}
			if mem > 0 {
				fn = min(fn, math.Floor(float64(st.memCap-st.mem)/mem))
			}
			if fn > 0 {
				n = int(fn)
				d := max(f.invSplit, cl.coreFrac, mem/float64(st.memCap))
				u = min(fn*d, st.free)
			}
		}
	}
	return n, u
}

// nodeFrag is a node's fragmentation as it stands, for one snapshot,
// node version and host state: what every pod scored on the node starts
// from. It is read-only once stored.
type nodeFrag struct {
	snap    *Snapshot
	version uint64
	host    HostFree
	acc     []classAcc
	total   float64
	f       float64
	// free and per are each GPU's free capacity and, per class, what
	// contrib says of it (per[g*classes+c]).
	free []float64
	per  []gpuClass
}

type gpuClass struct {
	n int
	u float64
}

// standing returns v's fragmentation as it stands, from the mix's cache
// or computed (and cached).
func (f *fitter) standing(v *ledger.View, host HostFree) *nodeFrag {
	fs := &f.frag
	if f.mix != nil {
		if e, ok := f.mix.cache.Load(v.Name); ok {
			if e := e.(*nodeFrag); e.snap == fs.snap && e.version == v.Version && e.host == host {
				return e
			}
		}
	}
	nc := len(fs.snap.classes)
	e := &nodeFrag{snap: fs.snap, version: v.Version, host: host, acc: make([]classAcc, nc),
		free: make([]float64, len(v.GPUs)), per: make([]gpuClass, len(v.GPUs)*nc)}
	for g := range v.GPUs {
		b := f.state(v, g, own{})
		if b.free <= 0 {
			continue
		}
		e.free[g] = b.free
		e.total += b.free
		for c := range fs.snap.classes {
			n, u := f.contrib(v, g, c, &b)
			e.per[g*nc+c] = gpuClass{n, u}
			e.acc[c].put(n, u, b.free, 1)
		}
	}
	e.f = f.expected(e.acc, e.total, host)
	if f.mix != nil {
		f.mix.cache.Store(v.Name, e)
	}
	return e
}

// fragDelta is how much the pod, as fitted (f.app, f.init), raises the
// node's expected fragmentation, in GPUs. host is the node's CPU and
// memory before the pod. Only the GPUs the pod touches are measured anew.
func (f *fitter) fragDelta(v *ledger.View, host HostFree) float64 {
	fs := &f.frag
	e := f.standing(v, host)
	copy(fs.accA, e.acc)
	totalA := e.total
	for g := range v.GPUs {
		a, i := f.app[g], f.init[g]
		if a.slots == 0 && i.slots == 0 {
			continue
		}
		o := own{slots: max(a.slots, i.slots), mem: max(a.mem, i.mem), cores: max(a.cores, i.cores), excl: a.excl || i.excl}
		af := f.state(v, g, o)
		totalA += max(af.free, 0) - e.free[g]
		nc := len(fs.snap.classes)
		for c := range fs.snap.classes {
			if e.free[g] > 0 {
				was := e.per[g*nc+c]
				fs.accA[c].put(was.n, was.u, e.free[g], -1)
			}
			f.add(&fs.accA[c], v, g, c, &af, 1)
		}
	}
	after := host
	after.CPUMilli -= f.pod.HostCPUMilli
	after.MemoryMiB -= f.pod.HostMemoryMiB
	return f.expected(fs.accA, totalA, after) - e.f
}

// expected is the node's expected fragmentation from per-class sums: over
// the shapes of the mix, the free GPU capacity each could not use. Two
// views of "could not use" are added, so that each corrects the other's
// blind spot:
//
//   - the paper's: all the free capacity if the shape cannot go to the
//     node at all (too few GPUs that fit it, too little CPU or memory),
//     else the free capacity of the GPUs too full to take it;
//   - the fill view: the free capacity left over if the node were filled
//     with pods of the shape, as far as its GPUs, CPU and memory allow.
//     It sees what the paper's misses: 8 free GPUs with CPU left for 2
//     pods strand 6, and a GPU with 90 % free strands 10 % for 40 % shares.
func (f *fitter) expected(acc []classAcc, total float64, host HostFree) float64 {
	s := f.frag.snap
	var sum float64
	for i := range s.shapes {
		sh := &s.shapes[i]
		cl := &s.classes[sh.class]
		a := &acc[sh.class]
		hostPods := math.Inf(1)
		if host.Known {
			if sh.cpu > 0 {
				hostPods = math.Floor(float64(max(host.CPUMilli, 0)) * sh.invCPU)
			}
			if sh.mem > 0 && !s.opts.CPUOnlyHost {
				hostPods = min(hostPods, math.Floor(float64(max(host.MemoryMiB, 0))*sh.invMem))
			}
		}
		lost := total
		if a.cnt >= cl.gpus && hostPods >= 1 {
			lost = a.frag
		}
		if !s.opts.PaperMeasure {
			pods := min(math.Floor(a.n*cl.invGPUs), hostPods)
			used := 0.0
			if a.n > 0 {
				used = a.u * pods / (a.n * cl.invGPUs)
			}
			lost += max(total-used, 0)
		}
		sum += sh.p * lost
	}
	return sum
}

// fragScore is the fragmentation node policy's score at full precision:
// minus the growth of the node's expected fragmentation, plus (unless the
// snapshot asks for FGD's plain ties) a binpack term too small to matter
// but where the growth is equal.
func (f *fitter) fragScore(v *ledger.View, host HostFree) float64 {
	if f.frag.snap == nil || len(f.frag.snap.classes) == 0 {
		return packWeight * f.nodeLoad(v)
	}
	s := -f.fragDelta(v, host)
	if !f.frag.snap.opts.NoTieBreak {
		s += packWeight * f.nodeLoad(v)
	}
	return s
}

// packWeight weighs the binpack term under the fragmentation policy: a
// hundredth of a GPU of expected fragmentation per unit of mean GPU load,
// so that it decides only between placements the measure rates within
// about that much of each other, and then prefers the fuller node, which
// keeps empty nodes for the pods that need them whole.
const packWeight = 0.01

// fragUnit maps a fragScore onto 0..1 for the extender's priorities: 0.5
// where the pod leaves the node's expected fragmentation unchanged, higher
// where it lowers it. A logistic curve keeps the difference between
// growths of a tenth of a GPU, the common case, visible on the extender's
// 0–10 scale.
func fragUnit(s float64) float64 { return 1 / (1 + math.Exp(-4*s)) }

// fragGPUOrder fills f.keys with, for each candidate GPU of the
// container, how much less free capacity the learned classes could not use
// on that GPU if the container's vGPU went there (higher is better). It
// measures the GPU alone: the node-wide terms (CPU, memory, how many GPUs
// a class needs) are the same whichever GPU of the node is chosen, and
// fragDelta counts them for the node's score.
func (f *fitter) fragGPUOrder(v *ledger.View, take func(g int) own) {
	classes := f.frag.snap.classes
	e := f.standing(v, f.host)
	for k, g := range f.cand {
		if h, ok := f.twin(v, g, f.cand[:k]); ok {
			f.keys[g] = f.keys[h]
			continue
		}
		a, i := f.app[g], f.init[g]
		fresh := a.slots == 0 && i.slots == 0
		cur := f.state(v, g, own{slots: max(a.slots, i.slots), mem: max(a.mem, i.mem), cores: max(a.cores, i.cores), excl: a.excl || i.excl})
		after := f.state(v, g, take(g))
		key := 0.0
		for c := range classes {
			var was float64
			if fresh {
				// As it stands: measured once per node state.
				if free := e.free[g]; free > 0 {
					pc := e.per[g*len(classes)+c]
					was = lost(pc.n, pc.u, free)
				}
			} else {
				was = f.lostOn(v, g, c, &cur)
			}
			key += classes[c].p * (was - f.lostOn(v, g, c, &after))
		}
		f.keys[g] = key
	}
}

// lost is the free capacity of a GPU with free left that a class could
// not use, given n and u from contrib, in both views of expected: all of
// it if no vGPU of the class fits, plus what filling it would leave over.
func lost(n int, u, free float64) float64 {
	l := free - u
	if n == 0 {
		l += free
	}
	return l
}

// lostOn is the free capacity of GPU g in state st that class c could not
// use, in both views of expected: all of it if no vGPU of c fits, plus
// what filling it with c would leave over.
func (f *fitter) lostOn(v *ledger.View, g, c int, st *gpuState) float64 {
	if st.free <= 0 {
		return 0
	}
	n, u := f.contrib(v, g, c, st)
	return lost(n, u, st.free)
}

// twin finds among done a GPU in the same state as g (same model, memory,
// usage and share of the pod so far): its key is g's. Most nodes have
// several such GPUs, empty ones above all.
func (f *fitter) twin(v *ledger.View, g int, done []int) (int, bool) {
	for _, h := range done {
		if v.Used[h] == v.Used[g] && f.app[h] == f.app[g] && f.init[h] == f.init[g] &&
			v.GPUs[h].MemoryMiB == v.GPUs[g].MemoryMiB && v.GPUs[h].Model == v.GPUs[g].Model {
			return h, true
		}
	}
	return 0, false
}
