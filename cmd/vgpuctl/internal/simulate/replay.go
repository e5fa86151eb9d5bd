// Package simulate replays a workload against a cluster with vgpu's own
// placement code (lib/placement, the extender's), following the method of
// the openb trace's paper, and reports how much GPU capacity gets allocated.
package simulate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
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

// podGPUs is what the pod asks of nvidia.com/gpu, as kube-scheduler counts
// it: the app containers' vGPUs together, or the largest init container's.
func podGPUs(p *request.Pod) int {
	app, init := 0, 0
	for _, c := range p.Containers {
		if c.Init {
			init = max(init, c.Count)
		} else {
			app += c.Count
		}
	}
	return max(app, init)
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
	capMilli := int64(c.GPUCount()) * 1000
	if capMilli == 0 {
		return nil, fmt.Errorf("cluster %s has no GPUs", c.Source)
	}
	var demand int64
	for _, t := range w.Tasks {
		demand += t.DemandMilli
	}
	if demand == 0 {
		return nil, fmt.Errorf("workload %s asks for no GPU: nothing to replay", w.Source)
	}
	l := ledger.New()
	names := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = n.Name
		inv := device.Inventory{GPUs: n.GPUs, SplitCount: o.SplitCount, MemoryScaling: o.MemoryScaling}
		if err := inv.Validate(); err != nil {
			return nil, fmt.Errorf("node %s: %v", n.Name, err)
		}
		l.SetInventory(n.Name, inv)
	}
	handles := l.Lookup(names, nil)
	gpuIndex := map[string]int{} // uuid → position in usedMilli
	for _, n := range c.Nodes {
		for _, g := range n.GPUs {
			gpuIndex[g.UUID] = len(gpuIndex)
		}
	}
	usedMilli := make([]int64, len(gpuIndex))
	cpuFree := make([]int64, len(c.Nodes))
	memFree := make([]int64, len(c.Nodes))
	slotsFree := make([]int, len(c.Nodes)) // nvidia.com/gpu the device plugin advertises, less what pods ask
	for i, n := range c.Nodes {
		cpuFree[i], memFree[i] = unlimited(n.CPUMilli), unlimited(n.MemoryMiB)
		for _, g := range n.GPUs {
			if g.Healthy {
				slotsFree[i] += o.SplitCount
			}
		}
	}
	nodes := newSampler(len(c.Nodes), o.SamplePercent)

	// Scores of a node change only when a pod lands on it, so they are
	// memoised per request shape (identical *request.Pod) and node version.
	version := make([]uint32, len(c.Nodes))
	for i := range version {
		version[i] = 1
	}
	type memo struct {
		version uint32
		fits    bool
		score   float64
	}
	memos := map[*request.Pod][]memo{}
	scorers := map[*request.Pod]*placement.Scorer{}
	// noGPU stands for every CPU-only pod: it takes no GPU, so it fits
	// every node and scores each by its GPUs as they stand.
	noGPU := &request.Pod{}

	r := rand.New(rand.NewPCG(o.Seed, 0x76677075))
	order := r.Perm(len(w.Tasks))
	target := int64(math.Floor(float64(capMilli) * o.TargetPercent / 100))
	run := &Run{Seed: o.Seed, FirstFailPct: -1}
	var arrived, allocated int64
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
		// The nodes that pass kube-scheduler's own filters, from where the
		// previous search stopped, until it has found enough.
		gpus := 0
		if t.Pod != nil {
			gpus = podGPUs(t.Pod)
		}
		candidates := nodes.sample(func(i int) bool {
			return cpuFree[i] >= t.CPUMilli && memFree[i] >= t.MemoryMiB && slotsFree[i] >= gpus
		})

		best := -1
		rank := t.Pod
		if rank == nil && !o.HostOnlyCPUPods {
			rank = noGPU
		}
		if rank == nil {
			best = bestCPUNode(c, candidates, cpuFree, memFree, t, o.Policies.Node)
		} else {
			sc := scorers[rank]
			if sc == nil {
				sc = placement.NewScorer(rank, o.Policies)
				scorers[rank] = sc
				memos[rank] = make([]memo, len(c.Nodes))
			}
			ms := memos[rank]
			bestScore := 0.0
			for _, i := range candidates {
				m := &ms[i]
				if m.version != version[i] {
					s, reason := sc.Score(handles[i])
					*m = memo{version: version[i], fits: reason == "", score: s}
				}
				if !m.fits {
					continue
				}
				score := m.score
				if o.CPUWeight > 0 {
					score += o.CPUWeight * hostScore(&c.Nodes[i], cpuFree[i], memFree[i], t, o.Policies.Node)
				}
				if best < 0 || score > bestScore || (score == bestScore && names[i] < names[best]) {
					best, bestScore = i, score
				}
			}
		}
		if best < 0 {
			run.Failed++
			if t.Pod != nil {
				run.FailedGPU++
				if run.FirstFailPct < 0 {
					run.FirstFailPct = pct(arrived, capMilli)
				}
			}
		} else {
			if t.Pod != nil {
				a, err := placement.Bind(l, fmt.Sprint("task-", k), t.Pod, names[best], o.Policies)
				if err != nil {
					return nil, fmt.Errorf("task %s: the node chosen refused the bind: %v", t.Name, err)
				}
				for _, ctr := range a.Containers {
					if ctr.Init {
						continue
					}
					for _, d := range ctr.Devices {
						usedMilli[gpuIndex[d.UUID]] += t.ShareMilli[ctr.Name]
					}
				}
				allocated += t.DemandMilli
				version[best]++
			}
			cpuFree[best] -= t.CPUMilli
			memFree[best] -= t.MemoryMiB
			slotsFree[best] -= gpus
		}
		run.Events = append(run.Events, Event{ArrivedPct: pct(arrived, capMilli), AllocPct: pct(allocated, capMilli)})
	}
	run.FragmentThreshold = typicalShare(w)
	var fragFree int64
	for _, u := range usedMilli {
		if free := 1000 - u; u > 0 && free > 0 && free < run.FragmentThreshold {
			run.Fragmented++
			fragFree += free
		}
	}
	run.FragmentedFreePct = pct(fragFree, capMilli)
	run.Wall = time.Since(start)
	return run, nil
}

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
