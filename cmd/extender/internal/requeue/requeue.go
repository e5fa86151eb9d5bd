// Package requeue makes kube-scheduler retry a pod the extender turned away
// for lack of GPU capacity as soon as capacity is freed.
//
// kube-scheduler 1.37 parks such a pod as unschedulable with the pseudo
// plugin "Extender" as its rejector, and moves it back to its queue on any
// cluster event, a pod deletion included. But the scheduler and the
// extender learn of the deletion from two different watches: when the
// scheduler's comes first, it retries the pod at once, the extender's
// ledger still holds the deleted pod's GPUs, the pod is rejected again, and
// no further event comes until the scheduler's periodic flush, minutes
// later. So when the ledger frees capacity, the extender patches an
// annotation on each pod it rejected for capacity shortly before: an update
// of an unschedulable pod is an event that requeues it.
package requeue

import (
	"context"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-io/vgpu/internal/patch"
)

// Annotation is the pod annotation the nudge sets, to the time of the nudge.
const Annotation = "vgpu.io/requeued-at"

const (
	// Window is how recent a rejection must be to be nudged. A rejection
	// older than the watch lag between scheduler and extender cannot have
	// raced with the release; the scheduler's own event requeues it.
	Window = 5 * time.Second
	// MaxPerRound bounds the patches of one release: the freed share fits
	// few pods, and the scheduler requeues the rest on its own events.
	MaxPerRound = 32
	// settle batches the releases of a burst (a Job's pods ending) into
	// one round.
	settle = 50 * time.Millisecond
)

type rejected struct {
	namespace, name string
	at              time.Time
	created         time.Time
}

// Nudger remembers recent capacity rejections and nudges them on release.
type Nudger struct {
	cs  kubernetes.Interface
	log *zap.Logger
	// Nudged, if set, counts each patched pod.
	Nudged func()
	now    func() time.Time

	mu       sync.Mutex
	rejected map[types.UID]rejected
	kick     chan struct{}
}

// New returns a nudger; Run it.
func New(cs kubernetes.Interface, log *zap.Logger) *Nudger {
	return &Nudger{cs: cs, log: log, now: time.Now, rejected: map[types.UID]rejected{}, kick: make(chan struct{}, 1)}
}

// Rejected records that no node had the capacity for pod.
func (n *Nudger) Rejected(pod *corev1.Pod) {
	n.mu.Lock()
	n.rejected[pod.UID] = rejected{namespace: pod.Namespace, name: pod.Name, at: n.now(), created: pod.CreationTimestamp.Time}
	n.mu.Unlock()
}

// Settled forgets a pod that was bound, deleted or finished.
func (n *Nudger) Settled(uid types.UID) {
	n.mu.Lock()
	delete(n.rejected, uid)
	n.mu.Unlock()
}

// Freed tells the nudger that capacity was released. It never blocks.
func (n *Nudger) Freed() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Run nudges until ctx ends.
func (n *Nudger) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(settle):
		}
		for _, r := range n.due() {
			n.nudge(ctx, r)
		}
	}
}

// due takes the pods to nudge out of the set, oldest pod first (the order
// of kube-scheduler's queue at equal priority), and drops stale entries.
func (n *Nudger) due() []rejected {
	n.mu.Lock()
	defer n.mu.Unlock()
	cutoff := n.now().Add(-Window)
	type entry struct {
		uid types.UID
		r   rejected
	}
	var recent []entry
	for uid, r := range n.rejected {
		if r.at.Before(cutoff) {
			delete(n.rejected, uid)
			continue
		}
		recent = append(recent, entry{uid, r})
	}
	sort.Slice(recent, func(i, j int) bool {
		a, b := recent[i].r, recent[j].r
		if !a.created.Equal(b.created) {
			return a.created.Before(b.created)
		}
		return a.namespace+"/"+a.name < b.namespace+"/"+b.name
	})
	out := make([]rejected, 0, min(len(recent), MaxPerRound))
	for _, e := range recent[:min(len(recent), MaxPerRound)] {
		delete(n.rejected, e.uid)
		out = append(out, e.r)
	}
	return out
}

func (n *Nudger) nudge(ctx context.Context, r rejected) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := patch.PodAnnotations(ctx, n.cs, r.namespace, r.name, map[string]string{Annotation: n.now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		n.log.Debug("requeue nudge failed", zap.String("pod", r.namespace+"/"+r.name), zap.Error(err))
		return
	}
	n.log.Debug("pod nudged for requeue", zap.String("pod", r.namespace+"/"+r.name))
	if n.Nudged != nil {
		n.Nudged()
	}
}
