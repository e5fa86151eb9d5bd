// Package simulate replays a workload against a cluster with vgpu's own
// placement code (lib/placement, the extender's), following the method of
// the openb trace's paper, and reports how much GPU capacity gets allocated.
package simulate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// Options are the knobs of one replay.
type Options struct {
	Policies      placement.Policies
	SplitCount    int
	MemoryScaling float64
	Seed          uint64
	// TargetPercent is how much GPU demand arrives, in % of capacity.
	TargetPercent float64
	// CPUWeight weighs the CPU and host-memory score that kube-scheduler
	// adds to the extender's (NodeResourcesFit: MostAllocated under the
	// binpack node policy, LeastAllocated under spread) against vgpu's GPU
	// score. 0 ranks pods by the GPU score alone.
	CPUWeight float64
	// HostOnlyCPUPods ranks CPU-only pods by the CPU/memory score alone,
	// blind to the nodes' GPUs, as a kube-scheduler without vgpu's extender
	// does (the extender only sees pods that ask for a vgpu resource). By
	// default the node policy ranks them like GPU pods, as the paper's
	// policies do: vgpu's GPU score of the node as it stands, plus
	// CPUWeight times the CPU/memory score.
	HostOnlyCPUPods bool
	// SamplePercent, from 1 to 99, makes each pod see only the sample of
	// nodes kube-scheduler would hand the extender with that
	// percentageOfNodesToScore: the first nodes, from where the previous pod's
	// search stopped, that pass kube-scheduler's own filters (CPU, host
	// memory, free nvidia.com/gpu), as many as that percentage of the
	// cluster but at least 100. 0 or 100 ranks every node, the paper's
	// method.
	SamplePercent int
	// FGD replaces a fragmentation policy's learned mix by the paper's:
	// the whole workload's distribution of shapes (exact CPU, no host
	// memory), known before the first pod, with plain ties.
	FGD bool
}

// minFeasibleNodes is kube-scheduler's floor on the nodes it samples.
const minFeasibleNodes = 100

// AdaptivePercent is kube-scheduler's percentageOfNodesToScore when the
// configuration leaves it unset: 50 % less one point per 125 nodes, at
// least 5 %.
func AdaptivePercent(nodes int) int {
	return max(50-nodes/125, 5)
}

// sampleSize is how many feasible nodes kube-scheduler looks for.
func sampleSize(nodes, percent int) int {
	if percent <= 0 || percent >= 100 || nodes < minFeasibleNodes {
		return nodes
	}
	return max(nodes*percent/100, minFeasibleNodes)
}

// sampler walks the nodes as kube-scheduler's search for feasible nodes
// does: each search starts where the previous one stopped, wraps around,
// and ends once it has found want nodes or looked at every node.
type sampler struct {
	nodes, want, next int
	found             []int
}

func newSampler(nodes, percent int) *sampler {
	return &sampler{nodes: nodes, want: sampleSize(nodes, percent), found: make([]int, 0, nodes)}
}

// sample returns the indexes of the nodes found feasible by fits, valid
// until the next call.
func (s *sampler) sample(fits func(i int) bool) []int {
	s.found = s.found[:0]
	looked := 0
	for ; looked < s.nodes && len(s.found) < s.want; looked++ {
		if i := (s.next + looked) % s.nodes; fits(i) {
			s.found = append(s.found, i)
		}
	}
	s.next = (s.next + looked) % max(s.nodes, 1)
	return s.found
}

// Event is the state after one pod was submitted.
type Event struct {
	ArrivedPct float64
	AllocPct   float64
}

// Run is the outcome of one replay.
type Run struct {
	Seed   uint64
	Events []Event
	// Submitted counts the pods submitted; Failed those that fit nowhere
	// (FailedGPU of them asked for GPUs).
	Submitted, Failed, FailedGPU int
	// FirstFailPct is the arrived % at the first GPU pod that failed, -1
	// if none did.
	FirstFailPct float64
	// PlacedPct is the share of the GPU demand that arrived (failed pods
	// included) which was placed, in %, at the end of the replay.
	PlacedPct float64
	// Fragmented counts GPUs partly used with less free than the typical
	// share (FragmentThreshold milli) at the end; FragmentedFreePct is
	// their free capacity in % of the cluster's.
	Fragmented        int
	FragmentedFreePct float64
	FragmentThreshold int64
	Wall              time.Duration
}

// Replay submits the workload in the paper's order: a seeded shuffle of
// the tasks, then tasks drawn with replacement until the next one would
// take the GPU demand past TargetPercent of capacity. Pods never leave; a
// pod that fits nowhere is dropped. GPU pods go through placement.Scorer
// and placement.Bind on a ledger.Ledger, exactly the extender's code; the
// node must also fit the pod's CPU and host memory. CPU-only pods are
// ranked by the same policy (see Options.HostOnlyCPUPods): under binpack
// they go where the GPUs are fullest, so that their CPU does not strand
// free GPUs.
func Replay(c *Cluster, w *Workload, o Options) (*Run, error) {
	start := time.Now()
	s, err := newSim(c, w, o)
	if err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(o.Seed, 0x76677075))
	order := r.Perm(len(w.Tasks))
	target := int64(math.Floor(float64(s.capMilli) * o.TargetPercent / 100))
	run := &Run{Seed: o.Seed, FirstFailPct: -1}
	var arrived int64
	for k := 0; ; k++ {
		var ti int
		if k < len(order) {
			ti = order[k]
		} else {
			ti = r.IntN(len(w.Tasks))
		}
		t := &w.Tasks[ti]
		if arrived+t.DemandMilli > target {
			break
		}
		arrived += t.DemandMilli
		run.Submitted++
		s.observe(t)
		if best := s.choose(t); best < 0 {
			run.Failed++
			if t.Pod != nil {
				run.FailedGPU++
				if run.FirstFailPct < 0 {
					run.FirstFailPct = pct(arrived, s.capMilli)
				}
			}
		} else if _, err := s.place(t, fmt.Sprint("task-", k), best); err != nil {
			return nil, err
		}
		run.Events = append(run.Events, Event{ArrivedPct: pct(arrived, s.capMilli), AllocPct: pct(s.allocated, s.capMilli)})
	}
	run.PlacedPct = pct(s.allocated, max(arrived, 1))
	s.fragmentation(run, w)
	run.Wall = time.Since(start)
	return run, nil
}

// sim is a cluster being replayed: the ledger, the nodes' CPU and memory,
// and the memoised scores.
type sim struct {
	c        *Cluster
	o        Options
	pol      placement.Policies
	frag     bool
	capMilli int64

	l         *ledger.Ledger
	names     []string
	handles   []*ledger.Node
	gpuIndex  map[string]int // uuid → position in usedMilli
	usedMilli []int64
	cpuFree   []int64
	memFree   []int64
	slotsFree []int // nvidia.com/gpu the device plugin advertises, less what pods ask
	nodes     *sampler
	allocated int64

	// Scores of a node change only when a pod lands on it or leaves it, so
	// they are memoised per request shape (identical *request.Pod), node
	// version and snapshot of the mix.
	version []uint32
	memos   map[*request.Pod][]memo
	scorers map[*request.Pod][]*placement.Scorer
	workers int
	stale   []int
}

type memo struct {
	gen     uint64
	version uint32
	fits    bool
	score   float64
}

// noGPU stands for every CPU-only pod outside the fragmentation policy: it
// takes no GPU, so it fits every node and scores each by its GPUs as they
// stand.
var noGPU = &request.Pod{}

func newSim(c *Cluster, w *Workload, o Options) (*sim, error) {
	s := &sim{c: c, o: o, pol: o.Policies, capMilli: int64(c.GPUCount()) * 1000, l: ledger.New(),
		memos: map[*request.Pod][]memo{}, scorers: map[*request.Pod][]*placement.Scorer{}, workers: runtime.GOMAXPROCS(0)}
	if s.capMilli == 0 {
		return nil, fmt.Errorf("cluster %s has no GPUs", c.Source)
	}
	var demand int64
	for _, t := range w.Tasks {
		demand += t.DemandMilli
	}
	if demand == 0 {
		return nil, fmt.Errorf("workload %s asks for no GPU: nothing to replay", w.Source)
	}
	if err := setInventories(s.l, c, o); err != nil {
		return nil, err
	}
	s.names = make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		s.names[i] = n.Name
	}
	s.handles = s.l.Lookup(s.names, nil)
	s.gpuIndex = map[string]int{}
	for _, n := range c.Nodes {
		for _, g := range n.GPUs {
			s.gpuIndex[g.UUID] = len(s.gpuIndex)
		}
	}
	s.usedMilli = make([]int64, len(s.gpuIndex))
	s.cpuFree = make([]int64, len(c.Nodes))
	s.memFree = make([]int64, len(c.Nodes))
	s.slotsFree = make([]int, len(c.Nodes))
	s.version = make([]uint32, len(c.Nodes))
	for i, n := range c.Nodes {
		s.cpuFree[i], s.memFree[i] = unlimited(n.CPUMilli), unlimited(n.MemoryMiB)
		s.version[i] = 1
		split := o.SplitCount
		if n.SplitCount > 0 {
			split = n.SplitCount
		}
		for _, g := range n.GPUs {
			if g.Healthy {
				s.slotsFree[i] += split
			}
		}
	}
	s.nodes = newSampler(len(c.Nodes), o.SamplePercent)

	// The fragmentation policy measures against a mix of shapes: learned
	// from the pods as they arrive, or (FGD) the whole workload's.
	s.frag = s.pol.Node == settings.Fragmentation || s.pol.GPU == settings.Fragmentation
	if s.frag {
		s.pol.Mix = newMix(w, o.FGD)
		index := make(map[string]int, len(s.names))
		for i, n := range s.names {
			index[n] = i
		}
		s.pol.Host = func(node string) placement.HostFree { return s.host(index[node]) }
	}
	return s, nil
}

// setInventories gives the ledger each node's GPUs, with the node's own
// split count and memory scaling where it has them (a live node's
// inventory), else o's.
func setInventories(l *ledger.Ledger, c *Cluster, o Options) error {
	for _, n := range c.Nodes {
		inv := device.Inventory{GPUs: n.GPUs, SplitCount: o.SplitCount, MemoryScaling: o.MemoryScaling}
		if n.SplitCount > 0 {
			inv.SplitCount, inv.MemoryScaling = n.SplitCount, n.MemoryScaling
		}
		if err := inv.Validate(); err != nil {
			return fmt.Errorf("node %s: %v", n.Name, err)
		}
		l.SetInventory(n.Name, inv)
	}
	return nil
}

// newMix is the fragmentation policy's mix of shapes: empty, to be learned
// from the pods as they arrive, or (fgd, the paper's baseline) the whole
// workload's, known before the first pod.
func newMix(w *Workload, fgd bool) *placement.Mix {
	if !fgd {
		return placement.NewMix(placement.MixOptions{HalfLife: placement.DefaultHalfLife})
	}
	m := placement.NewMix(placement.MixOptions{ExactCPU: true, CPUOnlyHost: true, NoTieBreak: true, PaperMeasure: true})
	for i := range w.Tasks {
		m.Observe(w.Tasks[i].Shape)
	}
	m.Refresh()
	return m
}

func (s *sim) host(i int) placement.HostFree {
	return placement.HostFree{CPUMilli: s.cpuFree[i], MemoryMiB: s.memFree[i], Known: true}
}

// observe tells the learned mix of a pod's arrival.
func (s *sim) observe(t *Task) {
	if s.pol.Mix != nil && !s.o.FGD {
		s.pol.Mix.Observe(t.Shape)
	}
}

// choose returns the node the pod goes to, or -1: among the nodes that pass
// kube-scheduler's own filters (from where the previous search stopped,
// until it has found enough), the best by the policy.
func (s *sim) choose(t *Task) int {
	gen := uint64(0)
	if s.pol.Mix != nil {
		gen = s.pol.Mix.Snapshot().Gen
	}
	gpus := 0
	if t.Pod != nil {
		gpus = placement.PodVGPUs(t.Pod)
	}
	candidates := s.nodes.sample(func(i int) bool {
		return s.cpuFree[i] >= t.CPUMilli && s.memFree[i] >= t.MemoryMiB && s.slotsFree[i] >= gpus
	})
	rank := t.Pod
	if rank == nil && !s.o.HostOnlyCPUPods {
		rank = noGPU
		if s.frag {
			// Its CPU and memory decide which GPU shapes a node can
			// still host.
			rank = t.Shape
		}
	}
	if rank == nil {
		return bestCPUNode(s.c, candidates, s.cpuFree, s.memFree, t, s.o.Policies.Node)
	}
	scs := s.scorers[rank]
	if scs == nil {
		scs = make([]*placement.Scorer, s.workers)
		for w := range scs {
			scs[w] = placement.NewScorer(rank, s.pol).Terse()
		}
		s.scorers[rank] = scs
		s.memos[rank] = make([]memo, len(s.c.Nodes))
	}
	ms := s.memos[rank]
	s.stale = s.stale[:0]
	for _, i := range candidates {
		if m := &ms[i]; m.version != s.version[i] || m.gen != gen {
			s.stale = append(s.stale, i)
		}
	}
	parallel(len(s.stale), s.workers, func(w, lo, hi int) {
		for _, i := range s.stale[lo:hi] {
			var v float64
			var reason string
			if s.frag {
				v, reason = scs[w].ScoreHost(s.handles[i], s.host(i))
			} else {
				v, reason = scs[w].Score(s.handles[i])
			}
			ms[i] = memo{gen: gen, version: s.version[i], fits: reason == "", score: v}
		}
	})
	best, bestScore := -1, 0.0
	for _, i := range candidates {
		m := &ms[i]
		if !m.fits {
			continue
		}
		score := m.score
		if s.o.CPUWeight > 0 && !s.frag {
			score += s.o.CPUWeight * hostScore(&s.c.Nodes[i], s.cpuFree[i], s.memFree[i], t, s.o.Policies.Node)
		}
		if best < 0 || score > bestScore || (score == bestScore && s.names[i] < s.names[best]) {
			best, bestScore = i, score
		}
	}
	return best
}

// held is what a placed pod holds, for its release.
type held struct {
	node    int
	gpus    []int // positions in usedMilli, one per vGPU
	milli   []int64
	devices []string // the GPUs' uuids, one per vGPU
}

// place books the pod on node best under key, as the extender's bind does.
func (s *sim) place(t *Task, key string, best int) (held, error) {
	h := held{node: best}
	if t.Pod != nil {
		a, err := placement.Bind(s.l, key, t.Pod, s.names[best], s.pol)
		if err != nil {
			return h, fmt.Errorf("task %s: the node chosen refused the bind: %v", t.Name, err)
		}
		for _, ctr := range a.Containers {
			if !ctr.RunsWithApp() {
				continue
			}
			for _, d := range ctr.Devices {
				g := s.gpuIndex[d.UUID]
				s.usedMilli[g] += t.ShareMilli[ctr.Name]
				h.gpus, h.milli = append(h.gpus, g), append(h.milli, t.ShareMilli[ctr.Name])
				h.devices = append(h.devices, d.UUID)
			}
		}
		s.allocated += t.DemandMilli
		s.version[best]++
	} else if s.frag {
		s.version[best]++ // its CPU and memory changed
	}
	s.cpuFree[best] -= t.CPUMilli
	s.memFree[best] -= t.MemoryMiB
	if t.Pod != nil {
		s.slotsFree[best] -= placement.PodVGPUs(t.Pod)
	}
	return h, nil
}

// release undoes place.
func (s *sim) release(t *Task, key string, h held) {
	if t.Pod != nil {
		s.l.Release(key)
		for k, g := range h.gpus {
			s.usedMilli[g] -= h.milli[k]
		}
		s.allocated -= t.DemandMilli
		s.slotsFree[h.node] += placement.PodVGPUs(t.Pod)
	}
	s.cpuFree[h.node] += t.CPUMilli
	s.memFree[h.node] += t.MemoryMiB
	s.version[h.node]++
}

// fragmentation counts the GPUs left partly used with less than the typical
// share free.
func (s *sim) fragmentation(run *Run, w *Workload) {
	run.FragmentThreshold = typicalShare(w)
	var fragFree int64
	for _, u := range s.usedMilli {
		if free := 1000 - u; u > 0 && free > 0 && free < run.FragmentThreshold {
			run.Fragmented++
			fragFree += free
		}
	}
	run.FragmentedFreePct = pct(fragFree, s.capMilli)
}

// parallel runs fn over [0, n) in up to workers contiguous parts, on
// goroutines when there is enough to share; w numbers the part.
func parallel(n, workers int, fn func(w, lo, hi int)) {
	if workers <= 1 || n < 2*minParallel {
		fn(0, 0, n)
		return
	}
	workers = min(workers, n/minParallel)
	per := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(w, lo, hi)
		}()
	}
	wg.Wait()
}

// minParallel is the fewest nodes worth scoring on a goroutine of their own.
const minParallel = 128

func unlimited(v int64) int64 {
	if v <= 0 {
		return math.MaxInt64
	}
	return v
}

func pct(v, capacity int64) float64 { return float64(v) * 100 / float64(capacity) }

// bestCPUNode places a CPU-only pod on one of the candidate nodes (which
// have its CPU and memory free) by hostScore alone, blind to GPUs
// (Options.HostOnlyCPUPods), ties to the name that sorts first.
func bestCPUNode(c *Cluster, candidates []int, cpuFree, memFree []int64, t *Task, pol settings.Policy) int {
	best, bestScore := -1, 0.0
	for _, i := range candidates {
		s := hostScore(&c.Nodes[i], cpuFree[i], memFree[i], t, pol)
		if best < 0 || s > bestScore || (s == bestScore && c.Nodes[i].Name < c.Nodes[best].Name) {
			best, bestScore = i, s
		}
	}
	return best
}

// hostScore is kube-scheduler's NodeResourcesFit score in 0..1 with the
// pod placed: the mean of the CPU and memory fractions in use (binpack,
// MostAllocated) or of those free (spread, LeastAllocated).
func hostScore(n *Node, cpuFree, memFree int64, t *Task, pol settings.Policy) float64 {
	s := (fraction(n.CPUMilli, cpuFree-t.CPUMilli) + fraction(n.MemoryMiB, memFree-t.MemoryMiB)) / 2
	if pol == settings.Spread {
		s = 1 - s
	}
	return s
}

// fraction is how full a resource of capacity total is with free left.
func fraction(total, free int64) float64 {
	if total <= 0 {
		return 0
	}
	return float64(total-free) / float64(total)
}

// typicalShare is the median share, in milli, of the workload's vGPUs that
// take part of a GPU; 1000 if none does.
func typicalShare(w *Workload) int64 {
	var shares []int64
	for _, t := range w.Tasks {
		for _, s := range t.ShareMilli {
			if s < 1000 {
				shares = append(shares, s)
			}
		}
	}
	if len(shares) == 0 {
		return 1000
	}
	sort.Slice(shares, func(i, j int) bool { return shares[i] < shares[j] })
	return shares[len(shares)/2]
}

// Levels are the arrived percentages the curve reports.
var Levels = []int{10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130}

// AllocAt is the allocation % at an arrived level: the mean over the
// events whose arrived % rounds to it, else that of the last event below
// it; NaN if the replay never got near the level.
func (r *Run) AllocAt(level int) float64 {
	sum, n := 0.0, 0
	last := math.NaN()
	for _, e := range r.Events {
		switch rounded := int(math.Round(e.ArrivedPct)); {
		case rounded == level:
			sum += e.AllocPct
			n++
		case rounded < level:
			last = e.AllocPct
		}
	}
	if n > 0 {
		return sum / float64(n)
	}
	if len(r.Events) > 0 && r.Events[len(r.Events)-1].ArrivedPct < float64(level)-5 {
		return math.NaN()
	}
	return last
}
