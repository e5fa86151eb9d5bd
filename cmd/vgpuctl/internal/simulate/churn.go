package simulate

import (
	"container/heap"
	"fmt"
	"sort"
	"time"
)

// ChurnRun is the outcome of a replay with departures (ReplayChurn).
type ChurnRun struct {
	Submitted, GPUPods int
	// PlacedPct is the GPU demand of the pods that ran, in % of all the
	// demand submitted.
	PlacedPct float64
	// NeverRan counts GPU pods that were still waiting at their deletion
	// time; Waited those placed only after waiting, MeanWaitSeconds their
	// mean wait on the trace's clock.
	NeverRan, Waited int
	MeanWaitSeconds  float64
	// PeakAllocPct is the most GPU capacity in use at once, in %.
	PeakAllocPct float64
	Wall         time.Duration
}

// ReplayChurn replays the workload on the trace's own clock, with churn:
// each pod arrives at its creation time (ties in list order) and leaves at
// its deletion time; a pod that fits nowhere waits, in arrival order, and
// is tried again whenever a pod leaves, until its own deletion time
// passes. Placement is Replay's (same policies, memos and learned mix).
//
// compress >= 1 makes the pods arrive that many times as fast (creation
// times divided by it), each still running as long as in the trace: the
// same pods at a higher load.
func ReplayChurn(c *Cluster, w *Workload, o Options, compress float64) (*ChurnRun, error) {
	start := time.Now()
	for i := range w.Tasks {
		if !w.Tasks[i].HasTimes {
			return nil, fmt.Errorf("workload %s: task %s has no creation_time and deletion_time; the churn replay needs both (the multi-GPU openb lists have none)", w.Source, w.Tasks[i].Name)
		}
	}
	if compress < 1 {
		return nil, fmt.Errorf("compress %g: must be 1 or more", compress)
	}
	s, err := newSim(c, w, o)
	if err != nil {
		return nil, err
	}
	created := make([]int64, len(w.Tasks))
	deleted := make([]int64, len(w.Tasks))
	for i := range w.Tasks {
		t := &w.Tasks[i]
		created[i] = int64(float64(t.Created) / compress)
		deleted[i] = created[i] + t.Deleted - t.Created
	}
	order := make([]int, len(w.Tasks))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return created[order[a]] < created[order[b]] })

	run := &ChurnRun{}
	var running departures
	var waiting []int // task indexes, in arrival order
	var demand, ran int64
	var waitSum float64
	try := func(ti int, now int64) (bool, error) {
		t := &w.Tasks[ti]
		best := s.choose(t)
		if best < 0 {
			return false, nil
		}
		key := fmt.Sprint("task-", ti)
		h, err := s.place(t, key, best)
		if err != nil {
			return false, err
		}
		heap.Push(&running, departure{at: deleted[ti], task: ti, key: key, held: h})
		ran += t.DemandMilli
		if now > created[ti] && t.Pod != nil {
			run.Waited++
			waitSum += float64(now - created[ti])
		}
		run.PeakAllocPct = max(run.PeakAllocPct, pct(s.allocated, s.capMilli))
		return true, nil
	}
	next := 0
	for next < len(order) || running.Len() > 0 {
		if running.Len() > 0 && (next == len(order) || running[0].at <= created[order[next]]) {
			d := heap.Pop(&running).(departure)
			s.release(&w.Tasks[d.task], d.key, d.held)
			kept := waiting[:0]
			for _, ti := range waiting {
				if t := &w.Tasks[ti]; deleted[ti] <= d.at {
					if t.Pod != nil {
						run.NeverRan++
					}
					continue
				}
				ok, err := try(ti, d.at)
				if err != nil {
					return nil, err
				}
				if !ok {
					kept = append(kept, ti)
				}
			}
			waiting = kept
			continue
		}
		ti := order[next]
		next++
		t := &w.Tasks[ti]
		run.Submitted++
		demand += t.DemandMilli
		if t.Pod != nil {
			run.GPUPods++
		}
		s.observe(t)
		ok, err := try(ti, created[ti])
		if err != nil {
			return nil, err
		}
		if !ok {
			waiting = append(waiting, ti)
		}
	}
	for _, ti := range waiting {
		if w.Tasks[ti].Pod != nil {
			run.NeverRan++
		}
	}
	run.PlacedPct = pct(ran, max(demand, 1))
	if run.Waited > 0 {
		run.MeanWaitSeconds = waitSum / float64(run.Waited)
	}
	run.Wall = time.Since(start)
	return run, nil
}

type departure struct {
	at   int64
	task int
	key  string
	held held
}

// departures is a min-heap by time, then task index.
type departures []departure

func (d departures) Len() int { return len(d) }
func (d departures) Less(i, j int) bool {
	return d[i].at < d[j].at || (d[i].at == d[j].at && d[i].task < d[j].task)
}
func (d departures) Swap(i, j int) { d[i], d[j] = d[j], d[i] }
func (d *departures) Push(x any)   { *d = append(*d, x.(departure)) }
func (d *departures) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}
