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
	// allow[m*classes+c] says whether class c admits a GPU of models[m];
	// a row is filled when a model is first met.
	allow []bool
	// Per class, over the node's GPUs, after the pod.
	accA []classAcc
	// grpN and grpU are compute's results per group of classes for the
	// GPU state perClass is at, valid where grpStamp is stamp.
	grpStamp []uint64
	grpN     []int
	grpU     []float64
	stamp    uint64
	// cur is perClass's output for a GPU's state before the container.
	cur []gpuClass
	// after[g*classes+c] is perClass's output for GPU g in state
	// afterSt[g] (where afterOK[g]), as fragGPUOrder last measured it for
	// the node being fitted; fragDelta reuses it for the GPU chosen.
	after   []gpuClass
	afterSt []gpuState
	afterOK []bool
	// last is the node fragmentation standing last returned.
	last *nodeFrag
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
	nc := len(s.classes)
	f.frag.accA = make([]classAcc, nc)
	f.frag.cur = make([]gpuClass, nc)
	f.frag.after = f.frag.after[:0]
	f.frag.grpStamp, f.frag.grpN, f.frag.grpU = make([]uint64, s.groups), make([]int, s.groups), make([]float64, s.groups)
	f.frag.stamp = 0
}

// resetAfter makes room for a node of n GPUs and forgets what
// fragGPUOrder measured on the previous node.
func (fs *fragScratch) resetAfter(n int) {
	nc := len(fs.snap.classes)
	if cap(fs.after) < n*nc {
		fs.after = make([]gpuClass, n*nc)
	}
	if cap(fs.afterSt) < n {
		fs.afterSt, fs.afterOK = make([]gpuState, n), make([]bool, n)
	}
	fs.after, fs.afterSt, fs.afterOK = fs.after[:n*nc], fs.afterSt[:n], fs.afterOK[:n]
	clear(fs.afterOK)
}

// modelRow returns the row of allow for a GPU model, filling it the first
// time the model is met: a node's GPUs are nearly always of one model, so
// the search is short.
func (f *fitter) modelRow(model string) []bool {
	fs := &f.frag
	nc := len(fs.snap.classes)
	for i := len(fs.models) - 1; i >= 0; i-- {
		if fs.models[i] == model {
			return fs.allow[i*nc : i*nc+nc]
		}
	}
	fs.models = append(fs.models, model)
	for c := range fs.snap.classes {
		cl := &fs.snap.classes[c]
		fs.allow = append(fs.allow, cl.selectAll || cl.sel.Allows(model, ""))
	}
	m := len(fs.models) - 1
	return fs.allow[m*nc : m*nc+nc]
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

func (acc *classAcc) put(n int, u, free float64, sign int) {
	if n > 0 {
		acc.cnt += sign
	} else {
		acc.frag += float64(sign) * free
	}
	acc.n += float64(sign * n)
	acc.u += float64(sign) * u
}

// perClass fills out, per class, with how many of the class's vGPUs GPU g
// in state st would take and the capacity they would use; nothing for a
// GPU with no free capacity or of a model the class does not allow.
// Classes that differ only in the GPU models they allow share the
// arithmetic, done once per group.
func (f *fitter) perClass(v *ledger.View, g int, st *gpuState, out []gpuClass) {
	if st.free <= 0 {
		clear(out)
		return
	}
	fs := &f.frag
	allow := f.modelRow(v.GPUs[g].Model)
	fs.stamp++
	for c := range fs.snap.classes {
		if !allow[c] {
			out[c] = gpuClass{}
			continue
		}
		cl := &fs.snap.classes[c]
		if fs.grpStamp[cl.group] != fs.stamp {
			n, u := f.compute(v, g, cl, st)
			fs.grpStamp[cl.group], fs.grpN[cl.group], fs.grpU[cl.group] = fs.stamp, n, u
		}
		out[c] = gpuClass{fs.grpN[cl.group], fs.grpU[cl.group]}
	}
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
	name    string
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
	// Ranking the GPUs and scoring the node both start from it: the last
	// one saves the second look-up.
	if e := fs.last; e != nil && e.name == v.Name && e.snap == fs.snap && e.version == v.Version && e.host == host {
		return e
	}
	if f.mix != nil {
		if e, ok := f.mix.cache.Load(v.Name); ok {
			if e := e.(*nodeFrag); e.snap == fs.snap && e.version == v.Version && e.host == host {
				fs.last = e
				return e
			}
		}
	}
	nc := len(fs.snap.classes)
	e := &nodeFrag{name: v.Name, snap: fs.snap, version: v.Version, host: host, acc: make([]classAcc, nc),
		free: make([]float64, len(v.GPUs)), per: make([]gpuClass, len(v.GPUs)*nc)}
	for g := range v.GPUs {
		b := f.state(v, g, own{})
		if b.free <= 0 {
			continue
		}
		e.free[g] = b.free
		e.total += b.free
		per := e.per[g*nc : g*nc+nc]
		f.perClass(v, g, &b, per)
		for c, pc := range per {
			e.acc[c].put(pc.n, pc.u, b.free, 1)
		}
	}
	e.f = f.expected(e.acc, e.total, host)
	if f.mix != nil {
		f.mix.cache.Store(v.Name, e)
	}
	fs.last = e
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
	nc := len(fs.snap.classes)
	for g := range v.GPUs {
		a, i := f.app[g], f.init[g]
		if a.slots == 0 && i.slots == 0 {
			continue
		}
		o := own{slots: max(a.slots, i.slots), mem: max(a.mem, i.mem), cores: max(a.cores, i.cores), excl: a.excl || i.excl}
		af := f.state(v, g, o)
		totalA += max(af.free, 0) - e.free[g]
		now := fs.cur
		if g < len(fs.afterOK) && fs.afterOK[g] && fs.afterSt[g] == af {
			now = fs.after[g*nc : g*nc+nc]
		} else {
			f.perClass(v, g, &af, now)
		}
		for c := range fs.snap.classes {
			if e.free[g] > 0 {
				was := e.per[g*nc+c]
				fs.accA[c].put(was.n, was.u, e.free[g], -1)
			}
			if af.free > 0 {
				fs.accA[c].put(now[c].n, now[c].u, af.free, 1)
			}
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
	// The shapes come grouped by class (refreshLocked sorts them): what
	// depends on the class alone is worked out once per class.
	cls := -1
	var a *classAcc
	var gpusFit bool
	var perPod, gpuPods, gpuUsed float64
	for i := range s.shapes {
		sh := &s.shapes[i]
		if sh.class != cls {
			cls = sh.class
			cl := &s.classes[cls]
			a = &acc[cls]
			gpusFit = a.cnt >= cl.gpus
			perPod = a.n * cl.invGPUs
			gpuPods = math.Floor(perPod)
			if a.n > 0 {
				gpuUsed = a.u * gpuPods / perPod
			}
		}
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
		if gpusFit && hostPods >= 1 {
			lost = a.frag
		}
		if !s.opts.PaperMeasure {
			used := 0.0
			if a.n > 0 {
				used = gpuUsed
				if hostPods < gpuPods {
					used = a.u * hostPods / perPod
				}
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
	fs := &f.frag
	classes := fs.snap.classes
	nc := len(classes)
	e := f.standing(v, f.host)
	for k, g := range f.cand {
		row := fs.after[g*nc : g*nc+nc]
		if h, ok := f.twin(v, g, f.cand[:k]); ok {
			f.keys[g] = f.keys[h]
			copy(row, fs.after[h*nc:h*nc+nc])
			fs.afterSt[g], fs.afterOK[g] = fs.afterSt[h], true
			continue
		}
		a, i := f.app[g], f.init[g]
		t := take(g)
		was, free := e.per[g*nc:g*nc+nc], e.free[g]
		if a.slots != 0 || i.slots != 0 {
			cur := f.state(v, g, own{slots: max(a.slots, i.slots), mem: max(a.mem, i.mem), cores: max(a.cores, i.cores), excl: a.excl || i.excl})
			f.perClass(v, g, &cur, fs.cur)
			was, free = fs.cur, cur.free
		}
		after := f.state(v, g, t)
		f.perClass(v, g, &after, row)
		fs.afterSt[g], fs.afterOK[g] = after, true
		key := 0.0
		for c := range classes {
			var l float64
			if free > 0 {
				l = lost(was[c].n, was[c].u, free)
			}
			if after.free > 0 {
				l -= lost(row[c].n, row[c].u, after.free)
			}
			key += classes[c].p * l
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

// twin finds among done a GPU in the same state as g (same model, memory,
// usage and share of the pod so far): its key is g's. Most nodes have
// several such GPUs, empty ones above all.
func (f *fitter) twin(v *ledger.View, g int, done []int) (int, bool) {
	for _, h := range done {
		if v.Used[h] == v.Used[g] && f.app[h] == f.app[g] && f.init[h] == f.init[g] && f.side[h] == f.side[g] &&
			v.GPUs[h].MemoryMiB == v.GPUs[g].MemoryMiB && v.GPUs[h].Model == v.GPUs[g].Model {
			return h, true
		}
	}
	return 0, false
}
