package audit

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/pods"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
)

// GPUReader reads the node's GPUs.
type GPUReader interface {
	Read() ([]gpus.GPU, error)
}

// PodSource lists the node's live pods.
type PodSource interface {
	Synced() bool
	Pods() []pods.Pod
}

// Responder acts on containers found unenforced.
type Responder interface {
	// Confirmed is called once for each finding when it is confirmed.
	Confirmed(Finding)
	// Unenforced is called on every pass with every confirmed finding.
	Unenforced([]Finding)
}

// Auditor inspects the node every interval. A finding counts once it has
// been seen on every pass for ConfirmAfter: a process that is exiting may
// still hold memory after libvgpu gave its slot back, and an allocation may
// reach NVML a moment before libvgpu's count of it. Once confirmed, a finding
// stays for the life of the pod, since a container that got around its
// limits once can do so again; only what is not evidence (Finding.Evidence)
// is withdrawn when it no longer holds.
type Auditor struct {
	Dir string
	// Claims, on the DRA path, locates the regions of prepared claims
	// (docs/contract.md#on-the-dra-path); each is audited as the region of
	// every container that uses the claim's request.
	Claims       regions.Claims
	GPUs         GPUReader
	Pods         PodSource
	Regions      *regions.Reader
	Owners       Owners
	Options      Options
	ConfirmAfter time.Duration
	Respond      Responder
	Log          *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu        sync.Mutex
	pending   map[string]time.Time // finding id -> first seen
	confirmed map[string]Finding
	// unseenSince is when the current run of passes with an Unseen
	// container began; zero when the last pass had none.
	unseenSince time.Time
	blind       bool
}

// Pass makes one inspection and returns the findings confirmed by it.
func (a *Auditor) Pass() []Finding {
	if !a.Pods.Synced() {
		return nil
	}
	snap := a.snapshot()
	res := Inspect(snap, a.Owners, a.Options)

	a.mu.Lock()
	fresh := a.confirmLocked(res.Findings, snap)
	all := a.unenforcedLocked()
	wasBlind := a.blind
	a.updateBlindLocked(res.Unseen, snap.Now)
	blind := a.blind
	a.mu.Unlock()

	if blind && !wasBlind {
		u := res.Unseen[0]
		a.Log.Error("NVML lists none of the processes of a container that holds GPU memory: the audit cannot see pods' processes; run the monitor in the host's pid namespace (hostPID)",
			zap.String("podUID", u.PodUID), zap.String("container", u.Container), zap.String("gpu", u.GPU), zap.Int("containers", len(res.Unseen)))
	}
	for _, f := range fresh {
		a.Log.Warn("container's GPU limits are not enforced",
			zap.String("namespace", f.Ref.Namespace), zap.String("pod", f.Ref.Name), zap.String("container", f.Container),
			zap.String("gpu", f.GPU), zap.String("reason", f.Reason), zap.String("message", f.Message), zap.Bool("libvgpu", f.Libvgpu))
		if a.Respond != nil {
			a.Respond.Confirmed(f)
		}
	}
	if a.Respond != nil {
		a.Respond.Unenforced(all)
	}
	return fresh
}

// snapshot reads the node once: NVML's processes, the pods and every
// region, readable or not.
func (a *Auditor) snapshot() Snapshot {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	gs, err := a.GPUs.Read()
	if err != nil && len(gs) == 0 {
		// Without NVML nothing can be compared; the region checks still run.
		a.Log.Debug("audit: NVML unreadable", zap.Error(err))
	}
	snap := Snapshot{GPUs: gs, Pods: a.Pods.Pods(), Regions: map[Key]regions.Region{}, Unreadable: map[Key]error{}, Now: now()}
	entries, err := regions.ListWithClaims(a.Dir, a.Claims)
	if err != nil {
		a.Log.Warn("audit: cannot list region directories", zap.String("dir", a.Dir), zap.Error(err))
	}
	for _, e := range entries {
		switch r, st, err := a.Regions.Check(e); st {
		case regions.OK:
			snap.Regions[Key{e.PodUID, e.Container}] = r
		case regions.Corrupt:
			snap.Unreadable[Key{e.PodUID, e.Container}] = err
		}
	}
	return snap
}

// confirmLocked keeps a finding pending until it has been seen without a
// break for ConfirmAfter, and returns those confirmed by this pass. A
// confirmed finding lasts while its pod does when it is evidence, and
// while it is seen when it only says the monitor cannot tell.
func (a *Auditor) confirmLocked(found []Finding, snap Snapshot) []Finding {
	if a.pending == nil {
		a.pending, a.confirmed = map[string]time.Time{}, map[string]Finding{}
	}
	live := make(map[string]bool, len(snap.Pods))
	for _, p := range snap.Pods {
		live[string(p.UID)] = true
	}
	seen := make(map[string]bool, len(found))
	var fresh []Finding
	for _, f := range found {
		id := f.id()
		seen[id] = true
		if _, done := a.confirmed[id]; done {
			continue
		}
		first, ok := a.pending[id]
		if !ok {
			first = snap.Now
			a.pending[id] = first
		}
		if snap.Now.Sub(first) >= a.ConfirmAfter {
			delete(a.pending, id)
			a.confirmed[id] = f
			fresh = append(fresh, f)
		}
	}
	for id := range a.pending {
		if !seen[id] {
			delete(a.pending, id) // not continuous: start over if seen again
		}
	}
	for id, f := range a.confirmed {
		if !live[f.PodUID] || (!f.Evidence() && !seen[id]) {
			delete(a.confirmed, id)
		}
	}
	return fresh
}

// updateBlindLocked marks the audit blind once containers have held memory
// that NVML shows no process of theirs for, without a break, for
// ConfirmAfter.
func (a *Auditor) updateBlindLocked(unseen []Unseen, now time.Time) {
	if len(unseen) == 0 {
		a.unseenSince, a.blind = time.Time{}, false
		return
	}
	if a.unseenSince.IsZero() {
		a.unseenSince = now
	}
	a.blind = now.Sub(a.unseenSince) >= a.ConfirmAfter
}

// Blind reports whether, for ConfirmAfter, containers have held GPU memory
// that NVML shows no process of theirs for.
func (a *Auditor) Blind() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.blind
}

// Unenforced returns the confirmed findings, ordered.
func (a *Auditor) Unenforced() []Finding {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unenforcedLocked()
}

func (a *Auditor) unenforcedLocked() []Finding {
	out := make([]Finding, 0, len(a.confirmed))
	for _, f := range a.confirmed {
		out = append(out, f)
	}
	sortFindings(out)
	return out
}

// Run passes at once, then every interval until ctx ends.
func (a *Auditor) Run(ctx context.Context, interval time.Duration) {
	wait.UntilWithContext(ctx, func(context.Context) { a.Pass() }, interval)
}
