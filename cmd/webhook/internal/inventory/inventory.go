// Package inventory follows the GPU inventories that device plugins publish
// on their Nodes and answers one question for admission: how much memory
// does the largest GPU in the cluster offer?
package inventory

import (
	"sync"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/ledger"
)

// Largest tracks, per node, the memory of its largest GPU as the scheduler
// counts it (physical memory times the node's memory scaling). Unhealthy
// GPUs count too: admission is final for a pod, while a GPU may recover.
type Largest struct {
	log    *zap.Logger
	synced cache.InformerSynced

	mu     sync.RWMutex
	byNode map[string]int64
	max    int64
}

// New registers a Node informer on factory; start the factory to fill it.
func New(factory informers.SharedInformerFactory, log *zap.Logger) (*Largest, error) {
	l := &Largest{log: log, byNode: map[string]int64{}}
	inf := factory.Core().V1().Nodes().Informer()
	// Nodes are large (images, conditions); keep only what is read here.
	if err := inf.SetTransform(stripNode); err != nil {
		return nil, err
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { l.set(obj) },
		UpdateFunc: func(_, obj any) { l.set(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				l.update(n.Name, 0)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	l.synced = inf.HasSynced
	return l, nil
}

// HasSynced reports whether the first list of nodes has been seen.
func (l *Largest) HasSynced() bool { return l.synced() }

// LargestGPU implements admission.Capacity.
func (l *Largest) LargestGPU() (int64, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.max, l.max > 0
}

func (l *Largest) set(obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	raw, ok := n.Annotations[contract.AnnotationDevices]
	if !ok {
		l.update(n.Name, 0)
		return
	}
	inv, err := annotation.DecodeDevices(raw)
	if err != nil {
		l.log.Warn("node GPU inventory unreadable; its GPUs are ignored", zap.String("node", n.Name), zap.Error(err))
		l.update(n.Name, 0)
		return
	}
	var best int64
	for _, g := range inv.GPUs {
		if m := ledger.MemoryCapacity(g.MemoryMiB, inv.MemoryScaling); m > best {
			best = m
		}
	}
	l.update(n.Name, best)
}

func (l *Largest) update(node string, mib int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old, had := l.byNode[node]
	if mib == 0 {
		delete(l.byNode, node)
	} else {
		l.byNode[node] = mib
	}
	switch {
	case mib > l.max:
		l.max = mib
	case had && old == l.max && mib < old:
		// The largest shrank or left: recompute, O(nodes), only then.
		l.max = 0
		for _, m := range l.byNode {
			l.max = max(l.max, m)
		}
	}
}

// stripNode keeps a Node's name and GPU inventory only.
func stripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
	}}
	if v, ok := n.Annotations[contract.AnnotationDevices]; ok {
		out.Annotations = map[string]string{contract.AnnotationDevices: v}
	}
	return out, nil
}
