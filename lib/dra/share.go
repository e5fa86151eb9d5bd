package dra

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	resourcev1 "k8s.io/api/resource/v1"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/request"
)

// GPU is what a share needs to know of the device it landed on.
type GPU struct {
	UUID string
	// MemoryMiB is the GPU's real memory: a percentage in the opaque
	// config resolves against it.
	MemoryMiB int64
}

// Share is what one request of an allocated claim gets from vgpu's driver:
// the limits of each GPU, in the order of the allocation results, which is
// the container contract's order (docs/contract.md).
type Share struct {
	// Request is the claim's request, without a firstAvailable subrequest.
	Request string
	Devices []assign.Device
	// Results are the allocation results behind Devices, same order.
	Results []resourcev1.DeviceRequestAllocationResult
}

// Shares reads the shares of an allocated claim from its allocation:
// memory and cores from each result's consumed capacity
// (docs/dra.md#what-the-node-agent-publishes), a memory limit from the
// opaque ShareConfig where the booking does not show one (a whole GPU with
// gpumem). lookup names the GPU behind a pool's device. A claim that is not
// allocated has no shares.
func Shares(claim *resourcev1.ResourceClaim, lookup func(pool, device string) (GPU, bool)) ([]Share, error) {
	if claim.Status.Allocation == nil {
		return nil, nil
	}
	name := claim.Namespace + "/" + claim.Name
	var out []Share
	for _, r := range claim.Status.Allocation.Devices.Results {
		if r.Driver != Driver {
			continue
		}
		req, _, _ := strings.Cut(r.Request, "/")
		g, ok := lookup(r.Pool, r.Device)
		if !ok {
			return nil, fmt.Errorf("claim %s: request %q is allocated device %s/%s, which no %s ResourceSlice lists", name, req, r.Pool, r.Device, Driver)
		}
		cfg, err := shareConfig(claim.Status.Allocation.Devices.Config, r.Request)
		if err != nil {
			return nil, fmt.Errorf("claim %s: %w", name, err)
		}
		d := assign.Device{UUID: g.UUID, MemoryMiB: g.MemoryMiB}
		if q, ok := r.ConsumedCapacity[CapMemory]; ok && (!unnamedMemory(claim.Spec.Devices.Requests, r.Request) || g.MemoryMiB <= 0) {
			// Booked in whole MiB (the capacity's step). A request that
			// names no memory books the GPU's whole scaled memory, so that
			// nothing fits beside it, but, as on the extender path, is held
			// to the GPU's real memory.
			d.MemoryMiB = q.Value() / (1024 * 1024)
		}
		if q, ok := r.ConsumedCapacity[CapCores]; ok {
			d.Cores = int(q.Value())
		}
		if cfg != nil {
			c := request.Container{MemoryMiB: cfg.MemoryMiB, MemoryPercent: cfg.MemoryPercent}
			if m := c.MemoryOn(g.MemoryMiB); m > 0 {
				d.MemoryMiB = m
			}
		}
		i := slices.IndexFunc(out, func(s Share) bool { return s.Request == req })
		if i < 0 {
			out = append(out, Share{Request: req})
			i = len(out) - 1
		}
		out[i].Devices = append(out[i].Devices, d)
		out[i].Results = append(out[i].Results, r)
	}
	return out, nil
}

// unnamedMemory reports whether the claim's request (or, "request/sub",
// the subrequest of its firstAvailable list) is in the claim's spec and
// asks for no amount of memory.
func unnamedMemory(reqs []resourcev1.DeviceRequest, name string) bool {
	base, sub, _ := strings.Cut(name, "/")
	for _, r := range reqs {
		if r.Name != base {
			continue
		}
		switch {
		case sub == "" && r.Exactly != nil:
			return !asksMemory(r.Exactly.Capacity)
		case sub != "":
			for _, s := range r.FirstAvailable {
				if s.Name == sub {
					return !asksMemory(s.Capacity)
				}
			}
		}
	}
	return false
}

func asksMemory(c *resourcev1.CapacityRequirements) bool {
	if c == nil {
		return false
	}
	_, ok := c.Requests[CapMemory]
	return ok
}

// shareConfig is the last vgpu opaque config that applies to request
// (later entries override earlier ones, as in the DRA API), or nil.
func shareConfig(configs []resourcev1.DeviceAllocationConfiguration, request string) (*ShareConfig, error) {
	base, _, _ := strings.Cut(request, "/")
	var out *ShareConfig
	for _, c := range configs {
		if c.Opaque == nil || c.Opaque.Driver != Driver {
			continue
		}
		if len(c.Requests) > 0 && !slices.Contains(c.Requests, base) && !slices.Contains(c.Requests, request) {
			continue
		}
		var sc ShareConfig
		if err := json.Unmarshal(c.Opaque.Parameters.Raw, &sc); err != nil {
			return nil, fmt.Errorf("opaque config for driver %s: %v", Driver, err)
		}
		if sc.APIVersion != ConfigAPIVersion || sc.Kind != ConfigKind {
			return nil, fmt.Errorf("opaque config for driver %s: apiVersion %q, kind %q: must be %s, %s", Driver, sc.APIVersion, sc.Kind, ConfigAPIVersion, ConfigKind)
		}
		if sc.MemoryMiB < 0 || sc.MemoryPercent < 0 || sc.MemoryPercent > 100 || (sc.MemoryMiB > 0 && sc.MemoryPercent > 0) {
			return nil, fmt.Errorf("opaque config for driver %s: memoryMiB %d, memoryPercent %d: give at most one, memoryMiB at least 1, memoryPercent 1-100", Driver, sc.MemoryMiB, sc.MemoryPercent)
		}
		out = &sc
	}
	return out, nil
}
