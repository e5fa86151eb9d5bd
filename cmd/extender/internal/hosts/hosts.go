// Package hosts tracks, per node, the CPU and memory left for pods: the
// node's allocatable less what the pods bound to it request, from
// informers on every Node and every Pod. The fragmentation policy reads it
// to tell whether a node keeps the CPU and memory its free GPUs need
// (docs/placement.md); kube-scheduler's own NodeResourcesFit does the
// filtering.
package hosts

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/lib/kubescore"
	"github.com/vgpu-io/vgpu/lib/placement"
)

// Hosts is the CPU and memory books of every node.
type Hosts struct {
	mu    sync.RWMutex
	alloc map[string]amount
	used  map[string]amount
	pods  map[types.UID]podUse

	synced    []cache.InformerSynced
	factories []informers.SharedInformerFactory
}

type amount struct{ cpu, mem int64 }

type podUse struct {
	node string
	amount
}

// New registers the informers; Start runs them.
func New(cs kubernetes.Interface) (*Hosts, error) {
	h := &Hosts{alloc: map[string]amount{}, used: map[string]amount{}, pods: map[types.UID]podUse{}}
	f := informers.NewSharedInformerFactory(cs, 0)
	nodes := f.Core().V1().Nodes().Informer()
	if err := nodes.SetTransform(stripNode); err != nil {
		return nil, err
	}
	nreg, err := nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    h.node,
		UpdateFunc: func(_, obj any) { h.node(obj) },
		DeleteFunc: func(obj any) {
			if n, ok := unwrap(obj).(*corev1.Node); ok {
				h.mu.Lock()
				delete(h.alloc, n.Name)
				h.mu.Unlock()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	pods := f.Core().V1().Pods().Informer()
	if err := pods.SetTransform(stripPod); err != nil {
		return nil, err
	}
	preg, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { h.pod(obj, false) },
		UpdateFunc: func(_, obj any) { h.pod(obj, false) },
		DeleteFunc: func(obj any) { h.pod(unwrap(obj), true) },
	})
	if err != nil {
		return nil, err
	}
	h.synced = []cache.InformerSynced{nreg.HasSynced, preg.HasSynced}
	h.factories = []informers.SharedInformerFactory{f}
	return h, nil
}

// Start runs the informers until stop closes.
func (h *Hosts) Start(stop <-chan struct{}) {
	for _, f := range h.factories {
		f.Start(stop)
	}
}

// Shutdown waits for the informers to end after stop closed.
func (h *Hosts) Shutdown() {
	for _, f := range h.factories {
		f.Shutdown()
	}
}

// HasSynced reports whether the books hold every node and pod of the first
// list.
func (h *Hosts) HasSynced() bool {
	for _, fn := range h.synced {
		if !fn() {
			return false
		}
	}
	return true
}

// Free is what the node has left; Known is false for a node not (yet)
// seen.
func (h *Hosts) Free(node string) placement.HostFree {
	h.mu.RLock()
	defer h.mu.RUnlock()
	a, ok := h.alloc[node]
	if !ok {
		return placement.HostFree{}
	}
	u := h.used[node]
	return placement.HostFree{CPUMilli: a.cpu - u.cpu, MemoryMiB: a.mem - u.mem, Known: true}
}

func (h *Hosts) node(obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	a := amount{n.Status.Allocatable.Cpu().MilliValue(), n.Status.Allocatable.Memory().Value() >> 20}
	h.mu.Lock()
	h.alloc[n.Name] = a
	h.mu.Unlock()
}

// pod books what a pod bound to a node requests, until it ends.
func (h *Hosts) pod(obj any, deleted bool) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	ended := deleted || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.pods[p.UID]; ok {
		u := h.used[old.node]
		u.cpu -= old.cpu
		u.mem -= old.mem
		h.used[old.node] = u
		delete(h.pods, p.UID)
		if u == (amount{}) {
			delete(h.used, old.node)
		}
	}
	if ended || p.Spec.NodeName == "" {
		return
	}
	cpu, mem := kubescore.HostRequests(p)
	h.pods[p.UID] = podUse{node: p.Spec.NodeName, amount: amount{cpu, mem}}
	u := h.used[p.Spec.NodeName]
	u.cpu += cpu
	u.mem += mem
	h.used[p.Spec.NodeName] = u
}

// stripNode keeps the name and allocatable CPU and memory.
func stripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}
	out.Status.Allocatable = corev1.ResourceList{}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := n.Status.Allocatable[r]; ok {
			out.Status.Allocatable[r] = q
		}
	}
	return out, nil
}

// stripPod keeps what the books read (kubescore.HostRequests): node,
// phase, the containers' requests and restart policies, pod-level
// requests, overhead, and what a resize has the kubelet allocate; the rest
// of the pod is dropped from the informer's cache.
func stripPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion},
		Spec: corev1.PodSpec{NodeName: p.Spec.NodeName, InitContainers: requests(p.Spec.InitContainers), Containers: requests(p.Spec.Containers),
			Resources: p.Spec.Resources, Overhead: p.Spec.Overhead},
		Status: corev1.PodStatus{Phase: p.Status.Phase, Resources: p.Status.Resources, AllocatedResources: p.Status.AllocatedResources,
			ContainerStatuses: allocated(p.Status.ContainerStatuses), InitContainerStatuses: allocated(p.Status.InitContainerStatuses)},
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodResizePending {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Reason: c.Reason}}
		}
	}
	return out, nil
}

func requests(cs []corev1.Container) []corev1.Container {
	if len(cs) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy, Resources: corev1.ResourceRequirements{Requests: c.Resources.Requests}}
	}
	return out
}

// allocated keeps of container statuses what a resize changes: what the
// kubelet allocated and what it actuated.
func allocated(cs []corev1.ContainerStatus) []corev1.ContainerStatus {
	var out []corev1.ContainerStatus
	for _, c := range cs {
		if c.AllocatedResources != nil || c.Resources != nil {
			out = append(out, corev1.ContainerStatus{Name: c.Name, AllocatedResources: c.AllocatedResources, Resources: c.Resources})
		}
	}
	return out
}

func unwrap(obj any) any {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}
