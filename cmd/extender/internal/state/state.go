// Package state keeps the extender's picture of the cluster: the GPU ledger,
// filled from informers on Nodes (vgpu.io/devices) and on the pods of vgpu's
// scheduler (vgpu.io/assignment), and a cache of those pods for bind. It is
// rebuilt from the API server at every start; nothing else is persisted.
package state

import (
	"errors"
	"sync"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/kubescore"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/request"
)

// Hooks tell other parts of the extender about changes. Both may be nil.
type Hooks struct {
	// Freed is called when capacity may have appeared: a pod released its
	// GPUs, or a node's inventory changed.
	Freed func()
	// Settled is called when a pod no longer waits for scheduling: it was
	// bound, deleted or finished.
	Settled func(uid types.UID)
}

// State is the ledger and what feeds it.
type State struct {
	Ledger *ledger.Ledger
	// Mix learns the shapes of the pods vgpu's scheduler receives, for the
	// fragmentation policy (docs/placement.md): each pod counts once, when
	// the informer first shows it, so a restart rebuilds it from the pods
	// that still exist.
	Mix      *placement.Mix
	mixReady sync.Once
	log      *zap.Logger
	hooks    Hooks

	pods      listersv1.PodLister
	synced    []cache.InformerSynced
	factories []informers.SharedInformerFactory

	mu sync.Mutex
	// expect holds, per pod uid, the vgpu.io/assignment value a bind in
	// flight wrote ("" for a removal). Until the informer shows that value,
	// older views of the pod are stale and must not touch the ledger: a
	// stale view would undo the bind's reservation and let a second bind
	// take the same GPUs.
	expect map[string]string
}

// New registers the informers; Start runs them.
func New(cs kubernetes.Interface, schedulerName string, log *zap.Logger, hooks Hooks) (*State, error) {
	s := &State{Ledger: ledger.New(), Mix: placement.NewMix(placement.MixOptions{HalfLife: placement.DefaultHalfLife}),
		log: log, hooks: hooks, expect: map[string]string{}}

	nodeFactory := informers.NewSharedInformerFactory(cs, 0)
	nodes := nodeFactory.Core().V1().Nodes().Informer()
	if err := nodes.SetTransform(stripNode); err != nil {
		return nil, err
	}
	nreg, err := nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.node(obj) },
		UpdateFunc: func(old, obj any) { s.nodeUpdate(old, obj) },
		DeleteFunc: func(obj any) {
			if n, ok := unwrap(obj).(*corev1.Node); ok {
				s.Ledger.RemoveInventory(n.Name)
				s.Mix.Forget(n.Name)
			}
		},
	})
	if err != nil {
		return nil, err
	}

	// Only vgpu's scheduler writes assignments, so its pods are all there
	// is to account for; the field selector keeps every other pod of the
	// cluster out of this process.
	podFactory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.schedulerName", schedulerName).String()
	}))
	pods := podFactory.Core().V1().Pods()
	if err := pods.Informer().SetTransform(stripPod); err != nil {
		return nil, err
	}
	preg, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			s.observe(obj)
			s.pod(obj, false)
		},
		UpdateFunc: func(_, obj any) { s.pod(obj, false) },
		DeleteFunc: func(obj any) { s.pod(unwrap(obj), true) },
	})
	if err != nil {
		return nil, err
	}
	s.pods = pods.Lister()
	// The registrations, not the informers, report synced once the handlers
	// have booked every object of the first list.
	s.synced = []cache.InformerSynced{nreg.HasSynced, preg.HasSynced}
	s.factories = []informers.SharedInformerFactory{nodeFactory, podFactory}
	return s, nil
}

// Start runs the informers until stop closes.
func (s *State) Start(stop <-chan struct{}) {
	for _, f := range s.factories {
		f.Start(stop)
	}
}

// Shutdown waits for the informers to end after stop closed.
func (s *State) Shutdown() {
	for _, f := range s.factories {
		f.Shutdown()
	}
}

// HasSynced reports whether the ledger holds every node and pod of the
// first list: before that, a fit could hand out GPUs already in use. The
// first time it does, the learned mix is brought up to date with all of
// them at once.
func (s *State) HasSynced() bool {
	for _, fn := range s.synced {
		if !fn() {
			return false
		}
	}
	s.mixReady.Do(s.Mix.Refresh)
	return true
}

// observe counts a pod in the learned mix: a pod that asks for no vGPU
// counts for its CPU and memory; one that fails validation (the webhook
// denies those) does not count.
func (s *State) observe(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	req, err := request.FromPod(p)
	if errors.Is(err, request.ErrNoGPU) {
		req, err = &request.Pod{}, nil
		req.HostCPUMilli, req.HostMemoryMiB = kubescore.HostRequests(p)
	}
	if err != nil {
		return
	}
	s.Mix.Observe(req)
}

// Pod returns a pod of vgpu's scheduler from the cache (stripped to what
// scheduling reads).
func (s *State) Pod(namespace, name string) (*corev1.Pod, bool) {
	p, err := s.pods.Pods(namespace).Get(name)
	return p, err == nil
}

// Expect records the assignment value a bind is about to write on a pod
// ("" when it removes it).
func (s *State) Expect(uid types.UID, value string) {
	s.mu.Lock()
	s.expect[string(uid)] = value
	s.mu.Unlock()
}

// Unexpect drops an expectation whose write failed.
func (s *State) Unexpect(uid types.UID) {
	s.mu.Lock()
	delete(s.expect, string(uid))
	s.mu.Unlock()
}

func (s *State) pod(obj any, deleted bool) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := string(p.UID)
	if deleted || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		s.Unexpect(p.UID)
		if s.Ledger.Release(key) && s.hooks.Freed != nil {
			s.hooks.Freed()
		}
		s.settled(p.UID)
		return
	}
	if p.Spec.NodeName != "" {
		s.settled(p.UID)
	}
	raw, has := p.Annotations[contract.AnnotationAssignment]
	s.mu.Lock()
	want, expecting := s.expect[key]
	if expecting {
		if raw != want {
			s.mu.Unlock()
			return
		}
		delete(s.expect, key)
	}
	s.mu.Unlock()
	if !has {
		// A pod without an assignment holds nothing, except while its bind
		// is in flight: the bind's reservation stands until the bind
		// itself undoes it.
		return
	}
	a, err := annotation.DecodePodAssignment(p)
	if err != nil {
		s.log.Warn("pod assignment unreadable; its GPUs are not counted", zap.String("pod", p.Namespace+"/"+p.Name), zap.Error(err))
		return
	}
	if err := s.Ledger.Add(key, a); err != nil {
		s.log.Warn("running pod overcommits its GPUs", zap.String("pod", p.Namespace+"/"+p.Name), zap.Error(err))
	}
}

func (s *State) settled(uid types.UID) {
	if s.hooks.Settled != nil {
		s.hooks.Settled(uid)
	}
}

func (s *State) node(obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	raw, has := n.Annotations[contract.AnnotationDevices]
	if !has {
		s.Ledger.RemoveInventory(n.Name)
		return
	}
	inv, err := annotation.DecodeDevices(raw)
	if err != nil {
		s.log.Warn("node GPU inventory unreadable; no pod is placed there until it is fixed", zap.String("node", n.Name), zap.Error(err))
		s.Ledger.RemoveInventory(n.Name)
		return
	}
	s.Ledger.SetInventory(n.Name, inv)
	if s.hooks.Freed != nil {
		s.hooks.Freed()
	}
}

func (s *State) nodeUpdate(old, obj any) {
	o, ok1 := old.(*corev1.Node)
	n, ok2 := obj.(*corev1.Node)
	if ok1 && ok2 && o.Annotations[contract.AnnotationDevices] == n.Annotations[contract.AnnotationDevices] {
		// Node status heartbeats change nothing the extender reads.
		return
	}
	s.node(obj)
}

func unwrap(obj any) any {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}
