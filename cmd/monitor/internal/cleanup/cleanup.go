// Package cleanup removes the region directories, and the limits files
// beside them, of pods that no longer exist. A directory is removed only after its pod has been missing from a
// synced pod cache for a whole grace period, so that a pod the cache has not
// caught up with yet, or a monitor restart, never costs a live container its
// region.
package cleanup

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/lib/contract"
)

// Pods answers whether a pod of this node exists.
type Pods interface {
	Synced() bool
	Exists(uid string) bool
}

// Sweeper removes stale region directories.
type Sweeper struct {
	Dir   string
	Pods  Pods
	Grace time.Duration
	Log   *zap.Logger
	// Removed counts directories removed; may be nil.
	Removed prometheus.Counter
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	missingSince map[string]time.Time
}

// Sweep makes one pass and returns the directories it removed.
func (s *Sweeper) Sweep() []string {
	if !s.Pods.Synced() {
		return nil
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	if s.missingSince == nil {
		s.missingSince = map[string]time.Time{}
	}
	entries, err := regions.List(s.Dir)
	if err != nil {
		s.Log.Warn("cannot list region directories", zap.String("dir", s.Dir), zap.Error(err))
		return nil
	}
	seen := make(map[string]bool, len(entries))
	var removed []string
	for _, e := range entries {
		seen[e.Dir] = true
		if s.Pods.Exists(e.PodUID) {
			delete(s.missingSince, e.Dir)
			continue
		}
		since, ok := s.missingSince[e.Dir]
		if !ok {
			s.missingSince[e.Dir] = now()
			continue
		}
		if now().Sub(since) < s.Grace {
			continue
		}
		if err := os.RemoveAll(e.Dir); err != nil {
			s.Log.Warn("cannot remove stale region directory", zap.String("dir", e.Dir), zap.Error(err))
			continue
		}
		// The limits file beside it (docs/contract.md#where-limits-come-from).
		if err := os.Remove(e.Dir + contract.HostLimitsSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.Log.Warn("cannot remove stale limits file", zap.String("path", e.Dir+contract.HostLimitsSuffix), zap.Error(err))
		}
		delete(s.missingSince, e.Dir)
		removed = append(removed, e.Dir)
		if s.Removed != nil {
			s.Removed.Inc()
		}
		s.Log.Info("removed region of a pod that no longer exists",
			zap.String("podUID", e.PodUID), zap.String("container", e.Container), zap.Duration("grace", s.Grace))
	}
	for d := range s.missingSince {
		if !seen[d] {
			delete(s.missingSince, d)
		}
	}
	return removed
}

// Run sweeps at once, then every interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context, interval time.Duration) {
	wait.UntilWithContext(ctx, func(context.Context) { s.Sweep() }, interval)
}
