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
	r := &churnReplay{s: s, w: w, run: &ChurnRun{},
		created: make([]int64, len(w.Tasks)),
		deleted: make([]int64, len(w.Tasks)),
	}
	for i := range w.Tasks {
		t := &w.Tasks[i]
		r.created[i] = int64(float64(t.Created) / compress)
		r.deleted[i] = r.created[i] + t.Deleted - t.Created
	}
	order := make([]int, len(w.Tasks))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return r.created[order[a]] < r.created[order[b]] })

	for next := 0; next < len(order) || r.running.Len() > 0; {
		if r.running.Len() > 0 && (next == len(order) || r.running[0].at <= r.created[order[next]]) {
			err = r.depart(heap.Pop(&r.running).(departure))
		} else {
			err = r.arrive(order[next])
			next++
		}
		if err != nil {
			return nil, err
		}
	}
	for _, ti := range r.waiting {
		if w.Tasks[ti].Pod != nil {
			r.run.NeverRan++
		}
	}
	r.run.PlacedPct = pct(r.ran, max(r.demand, 1))
	if r.run.Waited > 0 {
		r.run.MeanWaitSeconds = r.waitSum / float64(r.run.Waited)
	}
	r.run.Wall = time.Since(start)
	return r.run, nil
}

// churnReplay is one ReplayChurn under way, on the trace's clock.
type churnReplay struct {
	s                *sim
	w                *Workload
	run              *ChurnRun
	created, deleted []int64 // by task, compressed
	running          departures
	waiting          []int // task indexes, in arrival order
	demand, ran      int64
	waitSum          float64
}

// arrive submits a task at its creation time; it waits if it fits nowhere.
func (r *churnReplay) arrive(ti int) error {
	t := &r.w.Tasks[ti]
	r.run.Submitted++
	r.demand += t.DemandMilli
	if t.Pod != nil {
		r.run.GPUPods++
	}
	r.s.observe(t)
	ok, err := r.try(ti, r.created[ti])
	if err == nil && !ok {
		r.waiting = append(r.waiting, ti)
	}
	return err
}

// depart frees a task's share and tries the waiting ones again, in arrival
// order; those whose own deletion time has passed never ran.
func (r *churnReplay) depart(d departure) error {
	r.s.release(&r.w.Tasks[d.task], d.key, d.held)
	kept := r.waiting[:0]
	for _, ti := range r.waiting {
		if t := &r.w.Tasks[ti]; r.deleted[ti] <= d.at {
			if t.Pod != nil {
				r.run.NeverRan++
			}
			continue
		}
		ok, err := r.try(ti, d.at)
		if err != nil {
			return err
		}
		if !ok {
			kept = append(kept, ti)
		}
	}
	r.waiting = kept
	return nil
}

// try places a task at time now if it fits, and books its departure.
func (r *churnReplay) try(ti int, now int64) (bool, error) {
	t := &r.w.Tasks[ti]
	best := r.s.choose(t)
	if best < 0 {
		return false, nil
	}
	key := fmt.Sprint("task-", ti)
	h, err := r.s.place(t, key, best)
	if err != nil {
		return false, err
	}
	heap.Push(&r.running, departure{at: r.deleted[ti], task: ti, key: key, held: h})
	r.ran += t.DemandMilli
	if now > r.created[ti] && t.Pod != nil {
		r.run.Waited++
		r.waitSum += float64(now - r.created[ti])
	}
	r.run.PeakAllocPct = max(r.run.PeakAllocPct, pct(r.s.allocated, r.s.capMilli))
	return true, nil
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
