package discovery

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// DefaultIgnoredXids are Xids caused by an application, not by the GPU
// (NVIDIA's Xid catalogue: 13 graphics engine exception, 31 MMU fault,
// 43 reset channel verification error, 45 preemptive cleanup, 68 video
// processor exception, 109 context switch timeout). A faulty kernel raises
// them; marking the GPU unhealthy for them would let one pod take a GPU away
// from every other pod sharing it.
var DefaultIgnoredXids = []uint64{13, 31, 43, 45, 68, 109}

// ParseXids parses a comma-separated list of Xid numbers.
func ParseXids(s string) ([]uint64, error) {
	var out []uint64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("xid %q: must be a non-negative integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// Event is a health-relevant NVML event on one GPU.
type Event struct {
	UUID string
	// Xid is the Xid of a critical Xid error; 0 for other event types.
	Xid uint64
	// Type is the NVML event type bit.
	Type uint64
}

// watchedEvents are the event types that can make a GPU unusable.
const watchedEvents = nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError

// waitMillis bounds one NVML wait so cancellation is noticed promptly.
const waitMillis = 500

// WatchHealth registers for critical events on the given GPUs and calls
// unhealthy for each event that is not an ignored Xid, until ctx ends. A
// GPU whose events cannot be registered is reported right away: without
// events its health is unknown, and unknown must not look healthy.
func WatchHealth(ctx context.Context, lib nvml.Interface, uuids []string, ignored []uint64, unhealthy func(Event), warn func(msg string, uuid string, err error)) error {
	set, ret := lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("NVML EventSetCreate: %v", ret)
	}
	defer set.Free()
	skip := make(map[uint64]bool, len(ignored))
	for _, x := range ignored {
		skip[x] = true
	}
	for _, uuid := range uuids {
		d, ret := lib.DeviceGetHandleByUUID(uuid)
		if ret != nvml.SUCCESS {
			warn("GPU handle lookup failed; marking it unhealthy", uuid, ret)
			unhealthy(Event{UUID: uuid})
			continue
		}
		types := uint64(watchedEvents)
		if sup, ret := d.GetSupportedEventTypes(); ret == nvml.SUCCESS {
			types &= sup
		}
		if types == 0 {
			warn("GPU supports no health events; its health is not watched", uuid, nil)
			continue
		}
		if ret := d.RegisterEvents(types, set); ret != nvml.SUCCESS {
			warn("registering NVML health events failed; marking it unhealthy", uuid, ret)
			unhealthy(Event{UUID: uuid})
		}
	}
	for ctx.Err() == nil {
		e, ret := set.Wait(waitMillis)
		if ret == nvml.ERROR_TIMEOUT {
			continue
		}
		if ret != nvml.SUCCESS {
			return fmt.Errorf("NVML EventSet.Wait: %v", ret)
		}
		if e.EventType == nvml.EventTypeXidCriticalError && skip[e.EventData] {
			continue
		}
		ev := Event{Type: e.EventType}
		if e.EventType == nvml.EventTypeXidCriticalError {
			ev.Xid = e.EventData
		}
		if e.Device != nil {
			if u, ret := e.Device.GetUUID(); ret == nvml.SUCCESS {
				ev.UUID = u
			}
		}
		if ev.UUID == "" {
			// An event NVML could not attribute: every watched GPU is suspect.
			for _, u := range uuids {
				ev.UUID = u
				unhealthy(ev)
			}
			continue
		}
		unhealthy(ev)
	}
	return nil
}
