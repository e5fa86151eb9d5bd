// Package pods keeps the monitor's view of its own node from the API
// server: the pods bound to it (to name region directories and to sum what
// the scheduler assigned) and the node's GPU inventory. Both come from
// informers limited to this node, so a scrape never lists anything. On the
// DRA path (docs/dra.md) what is assigned comes from the allocated
// ResourceClaims and the inventory from the node's ResourceSlice.
package pods

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/booking"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/dra"
)

// Ref names a pod.
type Ref struct {
	Namespace string
	Name      string
	UID       types.UID
}

// Assigned is a live pod on this node with its vgpu assignment.
type Assigned struct {
	Ref
	// Assignment is what the pod holds, with its containers' limits.
	Assignment assign.Pod
	// Held, when set, is what the scheduler counts where it differs from
	// the limits (lib/booking's Held: the DRA path books a share that
	// names no memory at the GPU's whole scaled memory).
	Held *assign.Pod
}

// Node watches one node and the pods bound to it.
type Node struct {
	name  string
	log   *zap.Logger
	pods  cache.SharedIndexInformer
	nodes cache.SharedIndexInformer
	// slices and claims are set on the DRA path only.
	slices cache.SharedIndexInformer
	claims cache.SharedIndexInformer

	mu sync.Mutex
	// badAssignment remembers pods whose annotation did not decode, so
	// each is logged once.
	badAssignment map[types.UID]bool
	// warned remembers claims whose shares could not be read.
	warned map[string]bool
}

// Option changes how New reads the node.
type Option func(*options)

type options struct{ claims bool }

// FromClaims reads what is assigned from the allocated ResourceClaims and
// the GPUs from the node's ResourceSlice (the DRA path) instead of the
// vgpu.io annotations. It watches every claim of the cluster: a claim
// names its node only through its allocation.
func FromClaims() Option { return func(o *options) { o.claims = true } }

const byUID = "uid"

// New prepares informers for node name; call Run to start them.
func New(client kubernetes.Interface, name string, log *zap.Logger, opts ...Option) *Node {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	podFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", name).String()
		}))
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	n := &Node{
		name:          name,
		log:           log,
		pods:          podFactory.Core().V1().Pods().Informer(),
		nodes:         nodeFactory.Core().V1().Nodes().Informer(),
		badAssignment: map[types.UID]bool{},
		warned:        map[string]bool{},
	}
	if o.claims {
		sliceFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", name).String()
			}))
		n.slices = sliceFactory.Resource().V1().ResourceSlices().Informer()
		n.claims = informers.NewSharedInformerFactory(client, 0).Resource().V1().ResourceClaims().Informer()
		_ = n.claims.AddIndexers(cache.Indexers{byUID: func(obj any) ([]string, error) {
			return []string{string(obj.(*resourcev1.ResourceClaim).UID)}, nil
		}})
	}
	_ = n.pods.AddIndexers(cache.Indexers{byUID: func(obj any) ([]string, error) {
		return []string{string(obj.(*corev1.Pod).UID)}, nil
	}})
	return n
}

// Run starts the informers and waits until their caches are filled or ctx
// ends.
func (n *Node) Run(ctx context.Context) error {
	synced := []cache.InformerSynced{n.pods.HasSynced, n.nodes.HasSynced}
	for _, inf := range []cache.SharedIndexInformer{n.pods, n.nodes, n.slices, n.claims} {
		if inf != nil {
			go inf.Run(ctx.Done())
		}
	}
	if n.claims != nil {
		synced = append(synced, n.slices.HasSynced, n.claims.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("node %s: pod and node caches did not sync", n.name)
	}
	return nil
}

// Synced reports whether the caches hold a full list. Until then, a pod
// missing from the cache may well exist.
func (n *Node) Synced() bool {
	ok := n.pods.HasSynced() && n.nodes.HasSynced()
	if n.claims != nil {
		ok = ok && n.slices.HasSynced() && n.claims.HasSynced()
	}
	return ok
}

// Lookup finds a pod of this node by uid.
func (n *Node) Lookup(uid string) (Ref, bool) {
	objs, err := n.pods.GetIndexer().ByIndex(byUID, uid)
	if err != nil || len(objs) == 0 {
		return Ref{}, false
	}
	p := objs[0].(*corev1.Pod)
	return Ref{Namespace: p.Namespace, Name: p.Name, UID: p.UID}, true
}

// Assignments returns what this node's pods hold, ordered by namespace and
// pod: their assignments (extender path), or the shares of the claims
// allocated on this node (DRA path, one entry per claim, docs/dra.md). Both
// are read by lib/booking, so they count alike.
func (n *Node) Assignments() []Assigned {
	var ps []corev1.Pod
	for _, obj := range n.pods.GetStore().List() {
		ps = append(ps, *obj.(*corev1.Pod))
	}
	var bs []booking.Booking
	var warnings []string
	if n.claims != nil {
		bs, warnings = booking.FromClaims(n.name, listOf[*resourcev1.ResourceSlice](n.slices), listOf[*resourcev1.ResourceClaim](n.claims), ps)
	} else {
		bs, warnings = booking.FromPods(n.name, ps)
	}
	n.warnOnce(warnings)
	out := make([]Assigned, 0, len(bs))
	for _, b := range bs {
		a := Assigned{Ref: Ref{Namespace: b.Namespace, Name: b.Pod, UID: b.PodUID}, Assignment: b.Assignment}
		if held := b.Held(); !reflect.DeepEqual(held, b.Assignment) {
			a.Held = &held
		}
		out = append(out, a)
	}
	return out
}

func listOf[T any](inf cache.SharedIndexInformer) []T {
	objs := inf.GetStore().List()
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(T))
	}
	return out
}

// warnOnce logs each unreadable assignment or claim once.
func (n *Node) warnOnce(warnings []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, w := range warnings {
		if !n.warned[w] {
			n.warned[w] = true
			n.log.Warn("unreadable GPU booking; its GPUs are not counted", zap.String("booking", w))
		}
	}
}

// Container is the state of one container of a pod, from the pod's status.
type Container struct {
	// Init is true for an init container.
	Init bool
	// ID is the runtime's id, without the "<runtime>://" prefix; empty
	// until the kubelet reports it.
	ID string
	// Running, since StartedAt.
	Running   bool
	StartedAt time.Time
}

// Pod is a live pod of this node: its containers by name and its vgpu
// assignment, if it has one.
type Pod struct {
	Ref
	Assignment *assign.Pod
	Containers map[string]Container
}

// Pods returns the pods of this node that have not finished, ordered by
// namespace and name.
func (n *Node) Pods() []Pod {
	var out []Pod
	for _, obj := range n.pods.GetStore().List() {
		p := obj.(*corev1.Pod)
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		out = append(out, n.podOf(p))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func (n *Node) podOf(p *corev1.Pod) Pod {
	out := Pod{Ref: Ref{Namespace: p.Namespace, Name: p.Name, UID: p.UID}, Containers: map[string]Container{}}
	if n.claims != nil {
		if a, ok := n.claimAssignment(p); ok {
			out.Assignment = &a
		}
	} else if a, ok := n.assignment(p); ok {
		out.Assignment = &a
	}
	add := func(sts []corev1.ContainerStatus, init bool) {
		for _, st := range sts {
			c := Container{Init: init}
			if _, id, ok := strings.Cut(st.ContainerID, "://"); ok {
				c.ID = id
			}
			if r := st.State.Running; r != nil {
				c.Running, c.StartedAt = true, r.StartedAt.Time
			}
			out.Containers[st.Name] = c
		}
	}
	add(p.Status.InitContainerStatuses, true)
	add(p.Status.ContainerStatuses, false)
	return out
}

// assignment decodes the pod's vgpu.io/assignment; an unreadable one is
// logged once per pod.
func (n *Node) assignment(p *corev1.Pod) (assign.Pod, bool) {
	_, ok := p.Annotations[contract.AnnotationAssignment]
	if !ok {
		return assign.Pod{}, false
	}
	a, err := annotation.DecodePodAssignment(p)
	if err != nil {
		n.mu.Lock()
		first := !n.badAssignment[p.UID]
		n.badAssignment[p.UID] = true
		n.mu.Unlock()
		if first {
			n.log.Warn("pod has an unreadable assignment; its GPUs are not counted",
				zap.String("namespace", p.Namespace), zap.String("pod", p.Name), zap.Error(err))
		}
		return assign.Pod{}, false
	}
	return a, true
}

// claimAssignment is what the pod's allocated claims give it on this node
// (DRA path), in the extender path's shape: one entry per container that
// uses a claim's request, so that the audit checks each container against
// the limits it runs under.
func (n *Node) claimAssignment(p *corev1.Pod) (assign.Pod, bool) {
	var names []string
	for _, pc := range p.Spec.ResourceClaims {
		if pc.ResourceClaimName != nil {
			names = append(names, *pc.ResourceClaimName)
		}
	}
	for _, st := range p.Status.ResourceClaimStatuses {
		if st.ResourceClaimName != nil {
			names = append(names, *st.ResourceClaimName)
		}
	}
	var claims []*resourcev1.ResourceClaim
	for _, name := range names {
		if obj, ok, _ := n.claims.GetStore().GetByKey(p.Namespace + "/" + name); ok {
			claims = append(claims, obj.(*resourcev1.ResourceClaim))
		}
	}
	if len(claims) == 0 {
		return assign.Pod{}, false
	}
	bs, warnings := booking.FromClaims(n.name, listOf[*resourcev1.ResourceSlice](n.slices), claims, []corev1.Pod{*p})
	n.warnOnce(warnings)
	a := assign.Pod{Node: n.name}
	for _, b := range bs {
		if b.PodUID != p.UID {
			continue
		}
		for _, c := range b.Assignment.Containers {
			// A claim used by several containers books once; each of them
			// runs under its limits.
			for _, name := range strings.Split(c.Name, ",") {
				a.Containers = append(a.Containers, assign.Container{Name: name, Init: c.Init, Sidecar: c.Sidecar, Devices: c.Devices})
			}
		}
	}
	return a, len(a.Containers) > 0
}

// ClaimUsers names every pod of this node a prepared claim is reserved for,
// each with its containers that use request: the region of the claim's
// request is theirs, all of them together when pods share the claim. Empty
// off the DRA path, while no pod of this node holds the claim, or when none
// of their containers uses the request.
func (n *Node) ClaimUsers(claimUID, request string) []regions.Holder {
	if n.claims == nil {
		return nil
	}
	claims, _ := n.claims.GetIndexer().ByIndex(byUID, claimUID)
	if len(claims) == 0 {
		return nil
	}
	claim := claims[0].(*resourcev1.ResourceClaim)
	var out []regions.Holder
	for _, uid := range podsHolding(claim) {
		objs, err := n.pods.GetIndexer().ByIndex(byUID, uid)
		if err != nil || len(objs) == 0 {
			continue // reserved for a pod of another node, or not yet seen
		}
		if names := booking.ContainersUsing(objs[0].(*corev1.Pod), claim.Name, request); len(names) > 0 {
			out = append(out, regions.Holder{PodUID: uid, Containers: names})
		}
	}
	return out
}

// Inventory is the node's vgpu.io/devices annotation, if present and
// valid; on the DRA path, what its ResourceSlice lists.
func (n *Node) Inventory() (device.Inventory, bool) {
	if n.claims != nil {
		return dra.Inventory(n.name, listOf[*resourcev1.ResourceSlice](n.slices))
	}
	obj, ok, err := n.nodes.GetStore().GetByKey(n.name)
	if err != nil || !ok {
		return device.Inventory{}, false
	}
	v, ok := obj.(*corev1.Node).Annotations[contract.AnnotationDevices]
	if !ok {
		return device.Inventory{}, false
	}
	inv, err := annotation.DecodeDevices(v)
	if err != nil {
		return device.Inventory{}, false
	}
	return inv, true
}

// podsHolding lists the uids of the pods a claim is reserved for.
func podsHolding(claim *resourcev1.ResourceClaim) []string {
	var uids []string
	for _, r := range claim.Status.ReservedFor {
		if r.Resource == "pods" && r.APIGroup == "" {
			uids = append(uids, string(r.UID))
		}
	}
	return uids
}

// Exists reports whether a pod with this uid is bound to the node.
func (n *Node) Exists(uid string) bool {
	_, ok := n.Lookup(uid)
	return ok
}
