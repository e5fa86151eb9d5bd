// Package respond does what the cluster settings say with a container whose
// limits are not enforced (unenforcedAction, docs/settings.md): an Event on
// its pod always, and with "evict" the pod's eviction through the Eviction
// API, so that disruption budgets are honoured.
package respond

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/audit"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/pods"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// Event reasons on the pod.
const (
	EventUnenforced = "GPULimitsUnenforced"
	EventEvicting   = "GPULimitsUnenforcedEvicting"
)

// Responder records Events and evicts.
type Responder struct {
	Client   kubernetes.Interface
	Recorder record.EventRecorder
	// Action returns the setting in force.
	Action func() settings.UnenforcedAction
	Log    *zap.Logger
	// Evictions counts eviction attempts by result: evicted, refused (a
	// disruption budget said no; retried every pass), failed.
	Evictions *prometheus.CounterVec

	mu      sync.Mutex
	told    map[string]bool    // Events sent, by pod uid/container/reason/message
	evicted map[types.UID]bool // pods whose eviction was accepted
	refused map[types.UID]bool // pods whose refusal was logged
}

// Confirmed records one Event per container, reason and message.
func (r *Responder) Confirmed(f audit.Finding) {
	id := f.PodUID + "/" + f.Container + "/" + f.Reason + "/" + f.Message
	r.mu.Lock()
	if r.told == nil {
		r.told = map[string]bool{}
	}
	seen := r.told[id]
	r.told[id] = true
	r.mu.Unlock()
	if seen {
		return
	}
	who := "the monitor found"
	if f.Libvgpu {
		who = "libvgpu reported"
	}
	r.Recorder.Eventf(podRef(f.Ref), corev1.EventTypeWarning, EventUnenforced,
		"GPU limits of container %q are not enforced (%s, %s): %s", f.Container, f.Reason, who, f.Message)
}

// Unenforced evicts, when the setting says so, every pod with a confirmed
// finding that is evidence its limits do not hold (audit.Finding.Evidence);
// the others are only reported.
func (r *Responder) Unenforced(fs []audit.Finding) {
	live := map[string]bool{}
	byPod := map[types.UID]audit.Finding{}
	for _, f := range fs {
		live[f.PodUID] = true
		if !f.Evidence() {
			continue
		}
		if _, ok := byPod[f.Ref.UID]; !ok {
			byPod[f.Ref.UID] = f
		}
	}
	r.forget(live)
	if r.Action() != settings.Evict {
		return
	}
	for uid, f := range byPod {
		r.mu.Lock()
		done := r.evicted[uid]
		r.mu.Unlock()
		if !done {
			r.evict(f)
		}
	}
}

func (r *Responder) evict(f audit.Finding) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := r.Log.With(zap.String("namespace", f.Ref.Namespace), zap.String("pod", f.Ref.Name), zap.String("container", f.Container), zap.String("reason", f.Reason))
	err := r.Client.CoreV1().Pods(f.Ref.Namespace).EvictV1(ctx, &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.Ref.Namespace, Name: f.Ref.Name},
		// The uid precondition keeps a pod recreated under the same name safe.
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &f.Ref.UID}},
	})
	r.mu.Lock()
	if r.evicted == nil {
		r.evicted, r.refused = map[types.UID]bool{}, map[types.UID]bool{}
	}
	switch {
	case err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		r.evicted[f.Ref.UID] = true
		r.mu.Unlock()
		r.count("evicted")
		log.Warn("evicted a pod whose GPU limits are not enforced (unenforcedAction=evict)")
		r.Recorder.Eventf(podRef(f.Ref), corev1.EventTypeWarning, EventEvicting,
			"evicting the pod: unenforcedAction is %s and the GPU limits of container %q are not enforced (%s)", settings.Evict, f.Container, f.Reason)
	case apierrors.IsTooManyRequests(err):
		first := !r.refused[f.Ref.UID]
		r.refused[f.Ref.UID] = true
		r.mu.Unlock()
		r.count("refused")
		if first {
			log.Warn("eviction refused, retried on every pass (a PodDisruptionBudget forbids it now)", zap.Error(err))
		}
	default:
		r.mu.Unlock()
		r.count("failed")
		log.Error("cannot evict a pod whose GPU limits are not enforced; retried on the next pass", zap.Error(err))
	}
}

func (r *Responder) count(result string) {
	if r.Evictions != nil {
		r.Evictions.WithLabelValues(result).Inc()
	}
}

// forget drops what is remembered of pods with no finding left (gone).
func (r *Responder) forget(live map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.told {
		if uid, _, _ := strings.Cut(id, "/"); !live[uid] {
			delete(r.told, id)
		}
	}
	for uid := range r.evicted {
		if !live[string(uid)] {
			delete(r.evicted, uid)
			delete(r.refused, uid)
		}
	}
	for uid := range r.refused {
		if !live[string(uid)] {
			delete(r.refused, uid)
		}
	}
}

func podRef(p pods.Ref) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
}
