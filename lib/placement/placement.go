package placement

import (
	"math"
	"runtime"
	"sync"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// Policies are the node and GPU scheduler policies in force for a pod.
type Policies struct {
	Node settings.Policy
	GPU  settings.Policy
	// Mix is the learned distribution of pod shapes the fragmentation
	// policy measures against; without one, fragmentation ranks as
	// binpack does.
	Mix *Mix
	// Host, if set, tells the fragmentation policy a node's free CPU and
	// memory before the pod.
	Host func(node string) HostFree
}

// DefaultPolicies are the cluster settings' policies.
func DefaultPolicies(s settings.Settings) Policies {
	return Policies{Node: s.NodeSchedulerPolicy, GPU: s.GPUSchedulerPolicy}
}

// For applies the pod's annotation overrides.
func (p Policies) For(pod *request.Pod) Policies {
	p.Node, p.GPU = pod.Policies(p.Node, p.GPU)
	return p
}

// FitError is a failed fit: Reason says why, in words a user can act on.
type FitError struct {
	Node   string
	Reason string
}

func (e *FitError) Error() string { return "node " + e.Node + ": " + e.Reason }

// Filter reports which of the named nodes can take the pod, in the given
// order, and why each other node cannot. The pod's GPU policy is used
// because it decides which GPUs earlier containers take, and so whether
// later ones still fit; the verdict then agrees with Bind.
func Filter(l *ledger.Ledger, pod *request.Pod, nodes []string, pol Policies) (fits []string, failed map[string]string) {
	pol = pol.For(pod)
	handles := l.Lookup(nodes, make([]*ledger.Node, 0, len(nodes)))
	reasons := make([]string, len(nodes))
	chunks(len(nodes), func(lo, hi int) {
		f := newFitter(pod, pol)
		for i := lo; i < hi; i++ {
			if handles[i] == nil {
				reasons[i] = reasonNoInventory
				continue
			}
			handles[i].View(func(v ledger.View) { reasons[i] = f.fit(&v) })
		}
	})
	fits = make([]string, 0, len(nodes))
	for i, r := range reasons {
		if r == "" {
			fits = append(fits, nodes[i])
			continue
		}
		if failed == nil {
			failed = map[string]string{}
		}
		failed[nodes[i]] = r
	}
	return fits, failed
}

// chunkSize is the fewest nodes worth a goroutine of their own.
const chunkSize = 512

// chunks runs fn over [0, n) split into up to GOMAXPROCS contiguous ranges,
// as kube-scheduler parallelises its own filters.
func chunks(n int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), (n+chunkSize-1)/chunkSize)
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	per := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// Score rates a node for the pod, 0..100, with the pod placed on it: the
// mean load of the node's healthy GPUs (binpack) or 100 minus it (spread).
// A GPU's load is its fullest dimension among vGPU slots, memory (× scaling)
// and cores; a GPU held whole is full. A node the pod does not fit is a
// FitError.
func Score(l *ledger.Ledger, pod *request.Pod, node string, pol Policies) (int, error) {
	pol = pol.For(pod)
	f := newFitter(pod, pol)
	s, reason := f.score(l.Node(node), pol.Node)
	if reason != "" {
		return 0, &FitError{Node: node, Reason: reason}
	}
	return percent(pol.Node, s), nil
}

// Prioritize scores each named node, 0..100, 0 for a node the pod does not
// fit. The result is aligned with nodes.
func Prioritize(l *ledger.Ledger, pod *request.Pod, nodes []string, pol Policies) []int {
	pol = pol.For(pod)
	handles := l.Lookup(nodes, make([]*ledger.Node, 0, len(nodes)))
	out := make([]int, len(nodes))
	chunks(len(nodes), func(lo, hi int) {
		f := newFitter(pod, pol)
		for i := lo; i < hi; i++ {
			if s, reason := f.score(handles[i], pol.Node); reason == "" {
				out[i] = percent(pol.Node, s)
			}
		}
	})
	return out
}

// score returns the node policy's score at full precision (0..1 for
// binpack and spread; see unit for fragmentation), or the reason the pod
// does not fit.
func (f *fitter) score(n *ledger.Node, node settings.Policy) (float64, string) {
	if n == nil {
		return 0, reasonNoInventory
	}
	var s float64
	var reason string
	n.View(func(v ledger.View) {
		if reason = f.fit(&v); reason != "" {
			return
		}
		switch node {
		case settings.Fragmentation:
			s = f.fragScore(&v, f.host)
		case settings.Spread:
			s = 1 - f.nodeLoad(&v)
		default:
			s = f.nodeLoad(&v)
		}
	})
	return s, reason
}

// percent maps a score onto the extender's 0..100.
func percent(node settings.Policy, s float64) int {
	if node == settings.Fragmentation {
		s = fragUnit(s)
	}
	return int(math.Round(s * 100))
}

// Best returns the index of the node the pod should go to among nodes,
// skipping nil entries and those for which skip (if not nil) says so, or -1
// if it fits none. It ranks with Score's formula at full precision; ties go
// to the node whose name sorts first. skip may be called from several
// goroutines at once. The simulator uses it; the extender leaves the choice
// to kube-scheduler.
func Best(pod *request.Pod, nodes []*ledger.Node, pol Policies, skip func(i int) bool) int {
	pol = pol.For(pod)
	type pick struct {
		i int
		s float64
	}
	better := func(a, b pick) bool {
		return b.i < 0 || (a.i >= 0 && (a.s > b.s || (a.s == b.s && nodes[a.i].Name() < nodes[b.i].Name())))
	}
	var mu sync.Mutex
	best := pick{i: -1}
	chunks(len(nodes), func(lo, hi int) {
		f := newFitter(pod, pol)
		f.terse = true
		local := pick{i: -1}
		for i := lo; i < hi; i++ {
			if nodes[i] == nil || (skip != nil && skip(i)) {
				continue
			}
			if s, reason := f.score(nodes[i], pol.Node); reason == "" && better(pick{i, s}, local) {
				local = pick{i, s}
			}
		}
		mu.Lock()
		if better(local, best) {
			best = local
		}
		mu.Unlock()
	})
	return best.i
}

// Plan chooses the GPUs for the pod on node, by the pod's GPU policy,
// without booking them. Use Bind to plan and book in one step.
func Plan(l *ledger.Ledger, pod *request.Pod, node string, pol Policies) (assign.Pod, error) {
	pol = pol.For(pod)
	f := newFitter(pod, pol)
	n := l.Node(node)
	if n == nil {
		return assign.Pod{}, &FitError{Node: node, Reason: reasonNoInventory}
	}
	var a assign.Pod
	var reason string
	n.View(func(v ledger.View) {
		if reason = f.fit(&v); reason == "" {
			a = f.assignment(&v)
		}
	})
	if reason != "" {
		return assign.Pod{}, &FitError{Node: node, Reason: reason}
	}
	return a, nil
}

// Bind plans the pod on node and books it under podKey in one step, with
// the node locked in between, so that two binds can never take the same
// share. It fails with a FitError if the pod no longer fits (another bind
// won the race), or with a ledger error if podKey already holds GPUs.
func Bind(l *ledger.Ledger, podKey string, pod *request.Pod, node string, pol Policies) (assign.Pod, error) {
	pol = pol.For(pod)
	f := newFitter(pod, pol)
	return l.ReserveFunc(podKey, node, func(v ledger.View) (assign.Pod, error) {
		if reason := f.fit(&v); reason != "" {
			return assign.Pod{}, &FitError{Node: node, Reason: reason}
		}
		return f.assignment(&v), nil
	})
}

// Scorer rates nodes for one pod at full precision, reusing its scratch
// space; it is what Best does for each node, for callers that choose the
// node themselves (the simulator memoises scores of unchanged nodes). A
// Scorer is not safe for concurrent use.
type Scorer struct {
	f    *fitter
	node settings.Policy
}

// NewScorer prepares to score nodes for pod under pol (with the pod's
// overrides applied).
func NewScorer(pod *request.Pod, pol Policies) *Scorer {
	pol = pol.For(pod)
	return &Scorer{f: newFitter(pod, pol), node: pol.Node}
}

// Score returns the node's score at full precision (for binpack and
// spread Score's value / 100, unrounded; for fragmentation minus the
// growth in expected fragmentation, in GPUs) and "" if the pod fits, or
// the reason it does not. Higher is better; on equal scores Best prefers
// the node whose name sorts first.
func (s *Scorer) Score(n *ledger.Node) (float64, string) {
	return s.f.score(n, s.node)
}

// Terse makes Score and ScoreHost report a node the pod does not fit
// with one fixed reason, without counting why, for callers that only rank
// nodes (the simulator); it returns s.
func (s *Scorer) Terse() *Scorer {
	s.f.terse = true
	return s
}

// ScoreHost is Score for a node with host's CPU and memory free, for
// callers that track them per node themselves (the simulator).
func (s *Scorer) ScoreHost(n *ledger.Node, host HostFree) (float64, string) {
	s.f.host = host
	return s.f.score(n, s.node)
}
