// Package podresolver answers the question the kubelet's Allocate leaves
// open: which pod and container is this for? The kubelet admits pods one at a
// time in the order they reach it on its watch of the pods bound to its node,
// which is the order of their bindings, and allocates a pod's containers in
// order (init containers first); so the container being allocated is the
// next unserved vGPU container of the first-bound pod still waiting for one,
// among those asking for this many devices. The resolver's informer watches
// the same pods and sees the same order: the resourceVersion at which it
// first saw each pod bound. No lock is held between the scheduler's bind and
// the kubelet's admission (docs/contract.md#allocate); the resolver only
// reads the pods bound to its node and records what it served.
package podresolver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/allocated"
	"github.com/vgpu-io/vgpu/internal/patch"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
)

// Target is the resolved pod and container, with what it was assigned.
type Target struct {
	Pod       *corev1.Pod
	Container assign.Container
}

// Resolver is safe for concurrent use.
type Resolver struct {
	node   string
	client kubernetes.Interface
	pods   corelisters.PodLister
	log    *zap.Logger

	mu sync.Mutex
	// served holds what this process served, ahead of the informer seeing
	// its own vgpu.io/allocated patches.
	served map[types.UID][]allocated.Container
	// rejected pods got an Allocate error; the kubelet fails their
	// admission, so they must not stand in the queue before other pods.
	rejected map[types.UID]bool
	// boundAt is, per pod, the lowest resourceVersion this process saw it
	// bound to the node at: the kubelet's admission order (docs/deviceplugin.md#which-pod-is-this-for).
	boundAt map[types.UID]string
	// restarted holds the pods bound to the node when the kubelet last
	// started: it admits them before any other, oldest first
	// (docs/deviceplugin.md#which-pod-is-this-for).
	restarted map[types.UID]bool
}

// New returns a resolver for node over an informer's pod lister, which
// should hold the pods bound to node (field selector spec.nodeName).
func New(node string, client kubernetes.Interface, pods corelisters.PodLister, log *zap.Logger) *Resolver {
	return &Resolver{
		node: node, client: client, pods: pods, log: log,
		served:    map[types.UID][]allocated.Container{},
		rejected:  map[types.UID]bool{},
		boundAt:   map[types.UID]string{},
		restarted: map[types.UID]bool{},
	}
}

// Observe notes a pod the node's pod informer delivered (its add events
// come in the order of the watch, the kubelet's order): the first
// resourceVersion seen is that of the binding, before any later write
// to the pod moves it.
func (r *Resolver) Observe(p *corev1.Pod) {
	r.mu.Lock()
	r.noteLocked(p)
	r.mu.Unlock()
}

func (r *Resolver) noteLocked(p *corev1.Pod) {
	if p.Spec.NodeName != r.node {
		return
	}
	old, ok := r.boundAt[p.UID]
	if ok {
		if c, err := resourceversion.CompareResourceVersion(p.ResourceVersion, old); err != nil || c >= 0 {
			return
		}
	} else if _, err := resourceversion.CompareResourceVersion(p.ResourceVersion, p.ResourceVersion); err != nil {
		return
	}
	r.boundAt[p.UID] = p.ResourceVersion
}

// Forget drops what is remembered about a deleted pod.
func (r *Resolver) Forget(uid types.UID) {
	r.mu.Lock()
	delete(r.served, uid)
	delete(r.rejected, uid)
	delete(r.boundAt, uid)
	delete(r.restarted, uid)
	r.mu.Unlock()
}

// KubeletStarted notes that the kubelet (re)started: it lists the pods
// bound to its node and admits those it has not admitted yet in one batch,
// oldest first, ahead of any pod bound later, whatever the order of their
// bindings. A pod whose Allocate failed is among them again while it is
// Pending: the kubelet that failed it did not get to report it.
func (r *Resolver) KubeletStarted() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.restarted = map[types.UID]bool{}
	r.rejected = map[types.UID]bool{}
	for _, p := range r.cached() {
		if p.Spec.NodeName == r.node {
			r.restarted[p.UID] = true
		}
	}
}

// waiting is a pod's next container that waits for Allocate.
type waiting struct {
	pod        *corev1.Pod
	name       string
	init       bool
	count      int
	assignment assign.Pod
	// invalid says why the assignment cannot serve this container.
	invalid error
}

// GPUs is the sorted GPU uuids of the waiting container's assignment.
func (w waiting) gpus() []string {
	c, _ := w.assignment.Container(w.name, w.init)
	out := make([]string, 0, len(c.Devices))
	for _, d := range c.Devices {
		out = append(out, d.UUID)
	}
	sort.Strings(out)
	return out
}

// Preferred returns the GPUs of the container the next Allocate of count
// devices will be for, so the kubelet can be steered to device ids on them;
// nil when there is no such container or its assignment is unusable.
func (r *Resolver) Preferred(count int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws, _ := r.waitingLocked(r.cached(), count)
	if len(ws) == 0 || ws[0].invalid != nil {
		return nil
	}
	return ws[0].gpus()
}

// Resolve finds the container an Allocate of count devices on gpus (the
// GPUs of the device ids the kubelet chose) is for, and reserves it: the
// next Resolve will not return it again. Call Reject if the allocation
// fails after all, Record once it succeeds.
func (r *Resolver) Resolve(ctx context.Context, count int, gpus []string) (*Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pods := r.cached()
	ws, byCreation := r.waitingLocked(pods, count)
	source := "informer cache"
	if len(ws) == 0 {
		// The kubelet can see a pod before our informer does. One fresh
		// read settles it.
		list, err := r.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("spec.nodeName", r.node).String(),
		})
		if err != nil {
			return nil, fmt.Errorf("node %s: no pod in the informer cache waits for %d %s, and listing the node's pods failed: %w",
				r.node, count, contract.ResourceGPU, err)
		}
		pods = make([]*corev1.Pod, 0, len(list.Items))
		for i := range list.Items {
			pods = append(pods, &list.Items[i])
		}
		ws, byCreation = r.waitingLocked(pods, count)
		source = "API server"
	}
	if len(ws) == 0 {
		return nil, fmt.Errorf("node %s: no pod bound to this node has a container waiting for %d %s "+
			"(searched %d pods from the %s; a pod is waiting while it is Pending and some container with a %s limit has no entry in %s)",
			r.node, count, contract.ResourceGPU, len(pods), source, contract.ResourceGPU, contract.AnnotationAllocated)
	}
	w := ws[0]
	// A pod some of whose containers were served is being admitted: the
	// kubelet allocates its containers one after another, and gives those
	// after an init container that container's device ids again.
	if byCreation && len(r.servedLocked(w.pod)) == 0 {
		w = pick(ws, gpus)
	}
	if w.invalid != nil {
		r.rejected[w.pod.UID] = true
		return nil, fmt.Errorf("node %s: pod %s/%s container %q (%d %s): %w",
			r.node, w.pod.Namespace, w.pod.Name, w.name, w.count, contract.ResourceGPU, w.invalid)
	}
	c, _ := w.assignment.Container(w.name, w.init)
	uuids := make([]string, len(c.Devices))
	for i, d := range c.Devices {
		uuids[i] = d.UUID
	}
	r.served[w.pod.UID] = append(r.served[w.pod.UID], allocated.Container{Name: w.name, Init: w.init, Devices: uuids})
	return &Target{Pod: w.pod, Container: *c}, nil
}

// pick chooses among waiting containers in creation order (the kubelet's
// first list of pods after it starts, or pods without a binding order),
// which the kubelet admits in no defined order within a second: among pods
// created in the same second as the first, the one whose GPUs are those of
// the device ids the kubelet chose wins.
func pick(ws []waiting, gpus []string) waiting {
	want := slices.Clone(gpus)
	sort.Strings(want)
	if ws[0].invalid == nil && slices.Equal(ws[0].gpus(), want) {
		return ws[0]
	}
	first := ws[0].pod.CreationTimestamp
	for _, w := range ws[1:] {
		if w.pod.CreationTimestamp.Equal(&first) && w.invalid == nil && slices.Equal(w.gpus(), want) {
			return w
		}
	}
	return ws[0]
}

// Reject takes the target's pod out of the queue after its allocation
// failed: the kubelet fails the pod's admission on any Allocate error and
// never allocates it again, so the next Allocate is for a pod behind it.
func (r *Resolver) Reject(t *Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejected[t.Pod.UID] = true
	delete(r.served, t.Pod.UID)
}

// Record writes vgpu.io/allocated on the target's pod. The reservation
// made by Resolve already keeps the container from being resolved again in
// this process; the annotation carries that across restarts, so a failed
// write is retried in the background until ctx ends.
func (r *Resolver) Record(ctx, bgCtx context.Context, t *Target) error {
	err := r.patch(ctx, t.Pod)
	if err == nil {
		return nil
	}
	r.log.Warn("recording the allocation on the pod failed; retrying in the background",
		zap.String("pod", t.Pod.Namespace+"/"+t.Pod.Name), zap.Error(err))
	go func() {
		_ = wait.ExponentialBackoffWithContext(bgCtx, wait.Backoff{Duration: time.Second, Factor: 2, Steps: 10, Cap: time.Minute},
			func(ctx context.Context) (bool, error) {
				if err := r.patch(ctx, t.Pod); err != nil {
					r.log.Warn("recording the allocation on the pod failed", zap.String("pod", t.Pod.Namespace+"/"+t.Pod.Name), zap.Error(err))
					return false, nil
				}
				return true, nil
			})
	}()
	return err
}

func (r *Resolver) patch(ctx context.Context, pod *corev1.Pod) error {
	r.mu.Lock()
	rec := allocated.Record{Node: r.node, Containers: r.servedLocked(pod)}
	r.mu.Unlock()
	val, err := allocated.Encode(rec)
	if err != nil {
		return err
	}
	return patch.PodAnnotations(ctx, r.client, pod.Namespace, pod.Name, map[string]string{contract.AnnotationAllocated: val})
}

func (r *Resolver) cached() []*corev1.Pod {
	pods, err := r.pods.List(labels.Everything())
	if err != nil {
		// A lister over a cache does not fail.
		r.log.Error("listing cached pods", zap.Error(err))
	}
	return pods
}

// servedLocked is what was served to pod: its annotation and this process's
// own record, which may be ahead of the annotation the cache holds.
func (r *Resolver) servedLocked(pod *corev1.Pod) []allocated.Container {
	var out []allocated.Container
	if v, ok := pod.Annotations[contract.AnnotationAllocated]; ok {
		rec, err := allocated.Decode(v)
		if err != nil {
			r.log.Warn("ignoring unreadable allocation record", zap.String("pod", pod.Namespace+"/"+pod.Name), zap.Error(err))
		}
		out = append(out, rec.Containers...)
	}
	for _, c := range r.served[pod.UID] {
		if !slices.ContainsFunc(out, func(o allocated.Container) bool { return o.Name == c.Name && o.Init == c.Init }) {
			out = append(out, c)
		}
	}
	return out
}

// waitingLocked lists the pods' next waiting containers that ask for count
// devices, in the kubelet's order: first the pods it found at its last
// start, oldest first; then by the resourceVersion each pod was first seen
// bound at. Where one of those has none (an apiserver whose
// resourceVersions are not numbers), oldest pod first, then namespace and
// name.
//
// byCreation says the first of them is in creation order.
func (r *Resolver) waitingLocked(pods []*corev1.Pod, count int) (out []waiting, byCreation bool) {
	byBinding := true
	for _, p := range pods {
		// A pod being deleted stays: the kubelet admits every pod it is
		// told of, deletion timestamp or not, and stops it afterwards.
		if p.Spec.NodeName != r.node || r.rejected[p.UID] {
			continue
		}
		if p.Status.Phase != corev1.PodPending && p.Status.Phase != "" {
			// Admission allocates every container at once, before the pod
			// runs: a running pod waits for nothing.
			continue
		}
		w, ok := r.nextLocked(p)
		if !ok || w.count != count {
			continue
		}
		r.noteLocked(p)
		if _, ok := r.boundAt[p.UID]; !ok && !r.restarted[p.UID] {
			byBinding = false
		}
		out = append(out, w)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].pod, out[j].pod
		if ra, rb := r.restarted[a.UID], r.restarted[b.UID]; ra != rb {
			return ra
		}
		if byBinding && !r.restarted[a.UID] {
			if c, _ := resourceversion.CompareResourceVersion(r.boundAt[a.UID], r.boundAt[b.UID]); c != 0 {
				return c < 0
			}
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out, len(out) > 0 && (!byBinding || r.restarted[out[0].pod.UID])
}

// nextLocked is the pod's first vGPU container, in the kubelet's order,
// that has not been served.
func (r *Resolver) nextLocked(p *corev1.Pod) (waiting, bool) {
	served := r.servedLocked(p)
	isServed := func(name string, init bool) bool {
		return slices.ContainsFunc(served, func(c allocated.Container) bool { return c.Name == name && c.Init == init })
	}
	for _, group := range []struct {
		cs   []corev1.Container
		init bool
	}{{p.Spec.InitContainers, true}, {p.Spec.Containers, false}} {
		for _, c := range group.cs {
			n := gpuCount(c)
			if n == 0 || isServed(c.Name, group.init) {
				continue
			}
			w := waiting{pod: p, name: c.Name, init: group.init, count: n}
			w.assignment, w.invalid = assignmentFor(p, c.Name, group.init, n, r.node)
			return w, true
		}
	}
	return waiting{}, false
}

func gpuCount(c corev1.Container) int {
	q, ok := c.Resources.Limits[corev1.ResourceName(contract.ResourceGPU)]
	if !ok {
		q, ok = c.Resources.Requests[corev1.ResourceName(contract.ResourceGPU)]
	}
	if !ok {
		return 0
	}
	return int(q.Value())
}

// assignmentFor checks that the pod's assignment can serve the container.
func assignmentFor(p *corev1.Pod, name string, init bool, count int, node string) (assign.Pod, error) {
	a, err := annotation.DecodePodAssignment(p)
	if errors.Is(err, annotation.ErrMissing) {
		return a, fmt.Errorf("annotation %s is missing (the vgpu scheduler extender writes it at bind; the pod's schedulerName is %q)",
			contract.AnnotationAssignment, p.Spec.SchedulerName)
	}
	if err != nil {
		return a, err
	}
	if a.Node != node {
		return a, fmt.Errorf("%s is for node %q, not this node", contract.AnnotationAssignment, a.Node)
	}
	kind := "container"
	if init {
		kind = "init container"
	}
	c, ok := a.Container(name, init)
	if !ok {
		return a, fmt.Errorf("%s has no entry for %s %q", contract.AnnotationAssignment, kind, name)
	}
	if len(c.Devices) != count {
		return a, fmt.Errorf("%s gives %s %q %d devices (%s), but it asks for %d %s",
			contract.AnnotationAssignment, kind, name, len(c.Devices), deviceList(c.Devices), count, contract.ResourceGPU)
	}
	return a, nil
}

func deviceList(ds []assign.Device) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.UUID
	}
	return strings.Join(s, ",")
}
