// Package ledger keeps the books of GPU sharing: for every node, how many
// vGPU slots, how much memory and how many cores of each GPU are held, and by
// which pod. The extender keeps one Ledger in memory, fills it from the
// vgpu.io/assignment annotations of existing pods (Add, Rebuild), checks
// fits against it (View) and books each bind (Reserve, Reserve's refusal is
// the guard against double-booking a GPU).
//
// Concurrency: a Ledger is safe for concurrent use. Each node has its own
// RWMutex, so many filters read nodes in parallel while a bind writes one
// node; a bind never waits for a filter of another node. The pod index has
// one mutex of its own, held only for map operations and the write of one
// node, so every operation costs O(GPUs of the node), never O(pods). Copy-on-
// write snapshots were rejected: a bind would copy a node per reservation and
// filters would still need a consistent pointer swap, for no gain at 8 GPUs.
// Lock order: pods mutex, then nodes mutex, then a node's mutex.
package ledger

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/device"
)

// Usage is what is held on one GPU.
type Usage struct {
	// Slots is the number of vGPUs (container devices) on the GPU.
	Slots int
	// MemoryMiB and Cores are the sums over the holders.
	MemoryMiB int64
	Cores     int
	// Pods is the number of pods holding a share of the GPU.
	Pods int
	// Exclusive counts the pods holding the GPU whole: 0, or 1 (more only
	// if Add booked running pods that overcommit).
	Exclusive int
}

// IsZero reports whether nothing is held.
func (u Usage) IsZero() bool { return u == Usage{} }

// Use is what one pod holds on one GPU.
type Use struct {
	UUID      string
	Slots     int
	MemoryMiB int64
	Cores     int
	Exclusive bool
}

// Footprint is what a pod's assignment holds on each GPU. App containers
// and sidecars run together, so their uses add up; ordinary init containers
// run one at a time before the app containers, each beside the sidecars
// listed before it, so the pod holds the larger of the app sum and each init
// container with those sidecars, per GPU and per quantity — the rule
// kube-scheduler applies to a pod's requests (docs/contract.md). A device
// with 100 cores holds its GPU exclusively. The result is ordered by first
// appearance in the assignment.
func Footprint(a *assign.Pod) []Use {
	var out []Use
	find := func(uuid string) *Use {
		for i := range out {
			if out[i].UUID == uuid {
				return &out[i]
			}
		}
		out = append(out, Use{UUID: uuid})
		return &out[len(out)-1]
	}
	for _, c := range a.Containers {
		if !c.RunsWithApp() {
			continue
		}
		for _, d := range c.Devices {
			u := find(d.UUID)
			u.Slots++
			u.MemoryMiB += d.MemoryMiB
			u.Cores += d.Cores
			u.Exclusive = u.Exclusive || d.Cores >= 100
		}
	}
	var side []Use // the sidecars listed so far, summed per GPU
	for _, c := range a.Containers {
		if c.Sidecar {
			for _, d := range c.Devices {
				i := slices.IndexFunc(side, func(s Use) bool { return s.UUID == d.UUID })
				if i < 0 {
					side = append(side, Use{UUID: d.UUID})
					i = len(side) - 1
				}
				side[i].Slots++
				side[i].MemoryMiB += d.MemoryMiB
				side[i].Cores += d.Cores
			}
		}
		if c.RunsWithApp() {
			continue
		}
		for _, d := range c.Devices {
			var with Use
			if i := slices.IndexFunc(side, func(s Use) bool { return s.UUID == d.UUID }); i >= 0 {
				with = side[i]
			}
			u := find(d.UUID)
			u.Slots = max(u.Slots, with.Slots+1)
			u.MemoryMiB = max(u.MemoryMiB, with.MemoryMiB+d.MemoryMiB)
			u.Cores = max(u.Cores, with.Cores+d.Cores)
			u.Exclusive = u.Exclusive || d.Cores >= 100
		}
	}
	return out
}

// MemoryCapacity is how much memory of a GPU may be handed out: its memory
// times the node's memory scaling, rounded down.
func MemoryCapacity(memMiB int64, scaling float64) int64 {
	if scaling <= 1 {
		return memMiB
	}
	return int64(math.Floor(float64(memMiB) * scaling))
}

// Errors a caller may test for with errors.Is.
var (
	// ErrOvercommit: the reservation would exceed a GPU's slots, memory,
	// cores or exclusivity.
	ErrOvercommit = errors.New("would overcommit")
	// ErrConflict: the pod already holds a different reservation.
	ErrConflict = errors.New("pod already holds a different reservation")
	// ErrUnknownNode: no inventory is known for the node.
	ErrUnknownNode = errors.New("node has no known GPU inventory")
)

// Node is one node's books. Get one with Ledger.Node; read it with View.
type Node struct {
	name string
	mu   sync.RWMutex
	inv  device.Inventory
	// used is aligned with inv.GPUs.
	used  []Usage
	index map[string]int
	// orphans holds usage on GPUs that are no longer in the inventory, so
	// that releasing a pod stays exact whatever the inventory did meanwhile.
	orphans map[string]Usage
	hasInv  bool
	// version changes (from one counter for all nodes) whenever the node's
	// inventory or usage does, so that a caller can memoise what it
	// derived from a View.
	version uint64
}

var versions atomic.Uint64

// Name is the node's name.
func (n *Node) Name() string { return n.name }

// View is a read-only look at a node, valid only inside the View callback.
type View struct {
	Name string
	// Known is false while no inventory has been set for the node.
	Known         bool
	GPUs          []device.GPU
	Used          []Usage // aligned with GPUs
	SplitCount    int
	MemoryScaling float64
	// Version identifies this state of the node: it differs after any
	// change, on any node.
	Version uint64
}

// View calls fn with the node read-locked. fn must not keep the slices.
func (n *Node) View(fn func(v View)) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	fn(n.view())
}

func (n *Node) view() View {
	return View{Name: n.name, Known: n.hasInv, GPUs: n.inv.GPUs, Used: n.used, SplitCount: n.inv.SplitCount, MemoryScaling: n.inv.MemoryScaling, Version: n.version}
}

// Ledger is the books of every node. The zero value is not usable; use New.
type Ledger struct {
	podsMu sync.Mutex
	pods   map[string]record

	nodesMu sync.RWMutex
	nodes   map[string]*Node
}

type record struct {
	node string
	uses []Use
}

// New returns an empty ledger.
func New() *Ledger {
	return &Ledger{pods: map[string]record{}, nodes: map[string]*Node{}}
}

// Node returns a node's books, or nil if the ledger has never heard of it.
// The pointer stays valid for the life of the ledger unless the node is
// forgotten (no inventory and nothing held).
func (l *Ledger) Node(name string) *Node {
	l.nodesMu.RLock()
	n := l.nodes[name]
	l.nodesMu.RUnlock()
	return n
}

// Lookup appends to dst the books of each named node, nil for unknown ones.
func (l *Ledger) Lookup(names []string, dst []*Node) []*Node {
	l.nodesMu.RLock()
	for _, name := range names {
		dst = append(dst, l.nodes[name])
	}
	l.nodesMu.RUnlock()
	return dst
}

// NodeNames lists the nodes with an inventory, sorted.
func (l *Ledger) NodeNames() []string {
	l.nodesMu.RLock()
	out := make([]string, 0, len(l.nodes))
	for name, n := range l.nodes {
		n.mu.RLock()
		if n.hasInv {
			out = append(out, name)
		}
		n.mu.RUnlock()
	}
	l.nodesMu.RUnlock()
	sort.Strings(out)
	return out
}

// node returns a node's books, creating them. The caller holds podsMu.
func (l *Ledger) node(name string) *Node {
	if n := l.Node(name); n != nil {
		return n
	}
	l.nodesMu.Lock()
	defer l.nodesMu.Unlock()
	if n := l.nodes[name]; n != nil {
		return n
	}
	n := &Node{name: name, index: map[string]int{}, orphans: map[string]Usage{}}
	l.nodes[name] = n
	return n
}

// SetInventory records a node's GPUs and sharing settings, as published in
// its vgpu.io/devices annotation. What pods hold is kept, by GPU uuid. A GPU
// that disappears keeps its usage aside until its pods are released.
func (l *Ledger) SetInventory(name string, inv device.Inventory) {
	// Nodes are created and forgotten only under podsMu.
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	n := l.node(name)
	n.mu.Lock()
	defer n.mu.Unlock()
	old := make(map[string]Usage, len(n.used)+len(n.orphans))
	for uuid, i := range n.index {
		if !n.used[i].IsZero() {
			old[uuid] = n.used[i]
		}
	}
	for uuid, u := range n.orphans {
		old[uuid] = u
	}
	inv.GPUs = append([]device.GPU(nil), inv.GPUs...)
	n.inv = inv
	n.hasInv = true
	n.used = make([]Usage, len(inv.GPUs))
	n.index = make(map[string]int, len(inv.GPUs))
	for i, g := range inv.GPUs {
		n.index[g.UUID] = i
		n.used[i] = old[g.UUID]
		delete(old, g.UUID)
	}
	n.orphans = old
	n.version = versions.Add(1)
}

// RemoveInventory forgets a node's GPUs (the node was deleted or lost its
// annotation). What its pods hold is kept until they are released.
func (l *Ledger) RemoveInventory(name string) {
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	n := l.Node(name)
	if n == nil {
		return
	}
	n.mu.Lock()
	for uuid, i := range n.index {
		if !n.used[i].IsZero() {
			n.orphans[uuid] = n.used[i]
		}
	}
	n.inv, n.used, n.index, n.hasInv = device.Inventory{}, nil, map[string]int{}, false
	n.version = versions.Add(1)
	empty := len(n.orphans) == 0
	n.mu.Unlock()
	if empty {
		l.forgetIfEmpty(n)
	}
}

// forgetIfEmpty drops a node with no inventory and nothing held. The caller
// holds podsMu, under which alone nodes are created and forgotten.
func (l *Ledger) forgetIfEmpty(n *Node) {
	l.nodesMu.Lock()
	defer l.nodesMu.Unlock()
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.hasInv && len(n.orphans) == 0 && l.nodes[n.name] == n {
		delete(l.nodes, n.name)
	}
}

// Reserve books a pod's assignment on a.Node under podKey (the pod's uid,
// or namespace/name: one convention per ledger). It fails, booking nothing,
// if the node is unknown, if a GPU is not in its inventory or unhealthy, or
// if any GPU would exceed its slots, memory (× scaling), cores or
// exclusivity. Reserving the same assignment twice under one key is a no-op;
// a different one is ErrConflict.
func (l *Ledger) Reserve(podKey string, a assign.Pod) error {
	uses := Footprint(&a)
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	if err := l.checkKey(podKey, a.Node, uses); err != nil || l.has(podKey) {
		return err
	}
	n := l.Node(a.Node)
	if n == nil {
		return fmt.Errorf("reserve %s on %s: %w", podKey, a.Node, ErrUnknownNode)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.check(uses); err != nil {
		return fmt.Errorf("reserve %s on %s: %w", podKey, a.Node, err)
	}
	n.apply(uses, 1)
	l.pods[podKey] = record{node: a.Node, uses: uses}
	return nil
}

// ReserveFunc plans and books in one step: plan is called with the node
// write-locked, so no other bind can take what it chose in between. The
// returned assignment must be for this node; it is then booked as Reserve
// would. The extender's bind uses this through placement.Bind.
func (l *Ledger) ReserveFunc(podKey, node string, plan func(v View) (assign.Pod, error)) (assign.Pod, error) {
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	n := l.Node(node)
	if n == nil {
		return assign.Pod{}, fmt.Errorf("reserve %s on %s: %w", podKey, node, ErrUnknownNode)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if r, ok := l.pods[podKey]; ok {
		return assign.Pod{}, fmt.Errorf("reserve %s on %s: %w (on node %s)", podKey, node, ErrConflict, r.node)
	}
	a, err := plan(n.view())
	if err != nil {
		return assign.Pod{}, err
	}
	if a.Node != node {
		return assign.Pod{}, fmt.Errorf("reserve %s: planned for node %q, not %q", podKey, a.Node, node)
	}
	uses := Footprint(&a)
	if err := n.check(uses); err != nil {
		return assign.Pod{}, fmt.Errorf("reserve %s on %s: %w", podKey, node, err)
	}
	n.apply(uses, 1)
	l.pods[podKey] = record{node: node, uses: uses}
	return a, nil
}

func (l *Ledger) has(podKey string) bool {
	_, ok := l.pods[podKey]
	return ok
}

// checkKey returns ErrConflict if podKey holds something other than uses.
func (l *Ledger) checkKey(podKey, node string, uses []Use) error {
	r, ok := l.pods[podKey]
	if !ok {
		return nil
	}
	if r.node == node && sameUses(r.uses, uses) {
		return nil
	}
	return fmt.Errorf("reserve %s on %s: %w (on node %s)", podKey, node, ErrConflict, r.node)
}

func sameUses(a, b []Use) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Add books an existing pod's assignment without checking capacity: the pod
// already runs, so the books must show it even if it overcommits (after a
// settings change, say). It replaces what podKey held before. The returned
// error, if any, only reports an overcommit for logging; the pod is booked.
func (l *Ledger) Add(podKey string, a assign.Pod) error {
	uses := Footprint(&a)
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	if r, ok := l.pods[podKey]; ok {
		if r.node == a.Node && sameUses(r.uses, uses) {
			return nil
		}
		l.release(podKey, r)
	}
	n := l.node(a.Node)
	n.mu.Lock()
	defer n.mu.Unlock()
	err := n.check(uses)
	n.apply(uses, 1)
	l.pods[podKey] = record{node: a.Node, uses: uses}
	if err != nil && !errors.Is(err, ErrUnknownNode) {
		return fmt.Errorf("pod %s on %s: %w", podKey, a.Node, err)
	}
	return nil
}

// Release returns what podKey holds. It reports whether the pod held anything.
func (l *Ledger) Release(podKey string) bool {
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	r, ok := l.pods[podKey]
	if ok {
		l.release(podKey, r)
	}
	return ok
}

func (l *Ledger) release(podKey string, r record) {
	delete(l.pods, podKey)
	n := l.Node(r.node)
	if n == nil {
		return
	}
	n.mu.Lock()
	n.apply(r.uses, -1)
	forget := !n.hasInv && len(n.orphans) == 0
	n.mu.Unlock()
	if forget {
		l.forgetIfEmpty(n)
	}
}

// Rebuild replaces every booking with the given assignments, keyed by pod,
// as after a restart. Inventories are kept. It returns the overcommits
// found, joined, for logging; every pod is booked regardless.
func (l *Ledger) Rebuild(pods map[string]assign.Pod) error {
	l.podsMu.Lock()
	for key, r := range l.pods {
		l.release(key, r)
	}
	l.podsMu.Unlock()
	keys := make([]string, 0, len(pods))
	for k := range pods {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		if err := l.Add(k, pods[k]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Holds returns the node podKey is booked on.
func (l *Ledger) Holds(podKey string) (node string, ok bool) {
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	r, ok := l.pods[podKey]
	return r.node, ok
}

// PodCount is the number of pods booked.
func (l *Ledger) PodCount() int {
	l.podsMu.Lock()
	defer l.podsMu.Unlock()
	return len(l.pods)
}

// GPUState is one GPU's capacity and usage, for reports and tests.
type GPUState struct {
	GPU   device.GPU
	Used  Usage
	Known bool // false for usage on a GPU no longer in the inventory
}

// State returns a copy of a node's GPUs and what is held on them, inventory
// order first, then usage on GPUs no longer in the inventory (by uuid).
func (l *Ledger) State(node string) []GPUState {
	n := l.Node(node)
	if n == nil {
		return nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]GPUState, 0, len(n.used)+len(n.orphans))
	for i, g := range n.inv.GPUs {
		out = append(out, GPUState{GPU: g, Used: n.used[i], Known: true})
	}
	uuids := make([]string, 0, len(n.orphans))
	for u := range n.orphans {
		uuids = append(uuids, u)
	}
	sort.Strings(uuids)
	for _, u := range uuids {
		out = append(out, GPUState{GPU: device.GPU{UUID: u}, Used: n.orphans[u]})
	}
	return out
}

// check reports why uses do not fit on top of what the node holds. The
// caller holds n.mu.
func (n *Node) check(uses []Use) error {
	if !n.hasInv {
		return ErrUnknownNode
	}
	for _, u := range uses {
		i, ok := n.index[u.UUID]
		if !ok {
			return fmt.Errorf("GPU %s is not in the node's inventory: %w", u.UUID, ErrOvercommit)
		}
		g, cur := n.inv.GPUs[i], n.used[i]
		switch {
		case !g.Healthy:
			return fmt.Errorf("GPU %s is unhealthy: %w", u.UUID, ErrOvercommit)
		case cur.Exclusive > 0:
			return fmt.Errorf("GPU %s is held whole by another pod: %w", u.UUID, ErrOvercommit)
		case u.Exclusive && cur.Pods > 0:
			return fmt.Errorf("GPU %s is shared by %d pod(s) and cannot be taken whole: %w", u.UUID, cur.Pods, ErrOvercommit)
		case cur.Slots+u.Slots > n.inv.SplitCount:
			return fmt.Errorf("GPU %s: %d+%d vGPUs exceed the split count %d: %w", u.UUID, cur.Slots, u.Slots, n.inv.SplitCount, ErrOvercommit)
		case cur.MemoryMiB+u.MemoryMiB > MemoryCapacity(g.MemoryMiB, n.inv.MemoryScaling):
			return fmt.Errorf("GPU %s: %d+%d MiB exceed %d MiB: %w", u.UUID, cur.MemoryMiB, u.MemoryMiB, MemoryCapacity(g.MemoryMiB, n.inv.MemoryScaling), ErrOvercommit)
		case cur.Cores+u.Cores > 100:
			return fmt.Errorf("GPU %s: %d+%d cores exceed 100: %w", u.UUID, cur.Cores, u.Cores, ErrOvercommit)
		}
	}
	return nil
}

// apply adds (sign 1) or removes (sign -1) uses. The caller holds n.mu.
func (n *Node) apply(uses []Use, sign int) {
	n.version = versions.Add(1)
	for _, u := range uses {
		var cur *Usage
		i, inInv := n.index[u.UUID]
		if inInv {
			cur = &n.used[i]
		} else {
			o := n.orphans[u.UUID]
			cur = &o
		}
		cur.Slots += sign * u.Slots
		cur.MemoryMiB += int64(sign) * u.MemoryMiB
		cur.Cores += sign * u.Cores
		cur.Pods += sign
		if u.Exclusive {
			cur.Exclusive += sign
		}
		if !inInv {
			if cur.IsZero() {
				delete(n.orphans, u.UUID)
			} else {
				n.orphans[u.UUID] = *cur
			}
		}
	}
}
