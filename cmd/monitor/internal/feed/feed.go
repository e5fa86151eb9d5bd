// Package feed is the monitor's side of libvgpu's compute throttle: for
// every container with a cores limit it writes, into the container's region,
// the SM utilisation its processes reached over the last sample, so that
// libvgpu can pace kernel launches to the share (docs/shared-region.md). A
// container with a cores limit and no feed is reported unenforced by
// libvgpu after a few seconds, so this loop is what makes gpucores real.
package feed

import (
	"context"
	"slices"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/usage"
)

// Writer publishes one utilisation sample into device i of a region file.
type Writer interface {
	Publish(path string, device int, permille uint32) error
}

// GPUReader reads the node's GPUs.
type GPUReader interface {
	Read() ([]gpus.GPU, error)
}

// Feeder measures and publishes.
type Feeder struct {
	Dir string
	// Claims locates the regions of prepared DRA claims; empty on the
	// extender path.
	Claims  regions.Claims
	GPUs    GPUReader
	Regions *regions.Reader
	Procs   usage.OwnerResolver
	Writer  Writer
	Log     *zap.Logger
	// Reread is how often a region's limits and process list are read
	// again; samples go out every tick regardless. 0 rereads every tick.
	Reread time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	failed map[string]bool // region paths whose last publish failed, logged once
	known  map[string]known
}

// known is a region as last read, so that a tick every 100 ms does not
// read and decode every region of the node each time.
type known struct {
	region regions.Region
	ok     bool // decoded and limited
	at     time.Time
}

// limited reports whether any device of the region has a cores limit that
// libvgpu throttles (1-99; 0 is none and 100 a whole GPU).
func limited(r regions.Region) bool {
	for _, d := range r.Devices {
		if d.CoresLimit > 0 && d.CoresLimit < 100 {
			return true
		}
	}
	return false
}

// Tick makes one pass: measure once, publish to every limited container.
// It returns the number of samples published.
func (f *Feeder) Tick() int {
	entries, err := regions.ListWithClaims(f.Dir, f.Claims)
	if err != nil || len(entries) == 0 {
		f.known = nil
		return 0
	}
	now := time.Now
	if f.Now != nil {
		now = f.Now
	}
	t := now()
	seen := make(map[string]known, len(entries))
	var cs []usage.Container
	var paths []string
	at := map[string]int{} // path -> its index in cs
	for _, e := range entries {
		path := e.Path()
		if _, dup := seen[path]; dup {
			// A claim's region, listed once per container using it, in
			// each pod holding the claim: fed once, with the processes of
			// every such pod.
			if i, ok := at[path]; ok && !slices.Contains(cs[i].PodUIDs, e.PodUID) {
				cs[i].PodUIDs = append(cs[i].PodUIDs, e.PodUID)
			}
			continue
		}
		k, ok := f.known[path]
		if !ok || t.Sub(k.at) >= f.Reread {
			// Region directories are named by pod uid, which is all the
			// attribution needs: a pod the cache has not seen yet is fed too.
			reg, st := f.Regions.Read(e)
			k = known{region: reg, ok: st == regions.OK && limited(reg), at: t}
		}
		seen[path] = k
		if k.ok {
			at[path] = len(cs)
			cs = append(cs, usage.Container{PodUIDs: []string{e.PodUID}, Region: k.region})
			paths = append(paths, path)
		}
	}
	f.known = seen
	if len(cs) == 0 {
		return 0
	}
	gs, err := f.GPUs.Read()
	if err != nil && len(gs) == 0 {
		return 0 // nothing measured: publishing zeros would unleash every container
	}
	byUUID := make(map[string]gpus.GPU, len(gs))
	for _, g := range gs {
		byUUID[g.UUID] = g
	}
	util := usage.Utilization(cs, gs, f.Procs)
	n := 0
	failed := map[string]bool{}
	for i, c := range cs {
		var failure error
		for dev, d := range c.Region.Devices {
			if d.CoresLimit <= 0 || d.CoresLimit >= 100 {
				continue
			}
			g, ok := byUUID[d.UUID]
			if !ok {
				continue
			}
			permille, ok := Permille(g, util[i][d.UUID])
			if !ok {
				continue // a 0 would tell libvgpu the container has headroom
			}
			if err := f.Writer.Publish(paths[i], dev, permille); err != nil {
				failure = err
				continue
			}
			n++
		}
		if failure != nil && !f.failed[paths[i]] {
			f.Log.Warn("cannot publish utilisation into region; its compute limit is not fed", zap.String("path", paths[i]), zap.Error(failure))
		}
		if failure != nil {
			failed[paths[i]] = true
		}
	}
	f.failed = failed
	return n
}

// Permille is the sample for a container on GPU g whose processes used
// smPercent of the SMs, and false when nothing was measured. Where NVML
// cannot sample per process, the whole GPU's utilisation stands in: it
// over-counts when the GPU is shared, which throttles harder, never looser,
// than the limit.
func Permille(g gpus.GPU, smPercent uint32) (uint32, bool) {
	p := smPercent
	if !g.PerProcessSM {
		if g.UtilizationPercent < 0 {
			return 0, false
		}
		p = uint32(g.UtilizationPercent)
	}
	return min(p*10, 1000), true
}

// Run ticks every interval, at a fixed rate whatever a tick costs (libvgpu
// judges the feed by its period), until ctx ends.
func (f *Feeder) Run(ctx context.Context, interval time.Duration) {
	wait.NonSlidingUntilWithContext(ctx, func(context.Context) { f.Tick() }, interval)
}
