// Package gpustate holds what the plugin knows about its node's GPUs at this
// moment: the discovered GPUs, their health and the sharing settings in force.
// The kubelet stream and the Node inventory both derive from it, so a change
// in health or settings reaches both from one place.
package gpustate

import (
	"slices"
	"sync"

	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// State is safe for concurrent use.
type State struct {
	mu       sync.Mutex
	gpus     []device.GPU
	settings settings.Settings
	subs     map[chan struct{}]struct{}
}

// New starts from the discovered GPUs (health as discovered) and settings.
func New(gpus []device.GPU, s settings.Settings) *State {
	return &State{gpus: slices.Clone(gpus), settings: s, subs: map[chan struct{}]struct{}{}}
}

// Snapshot is a consistent copy of the state.
type Snapshot struct {
	GPUs     []device.GPU
	Settings settings.Settings
}

// Snapshot returns a copy that later changes do not affect.
func (s *State) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Snapshot{GPUs: slices.Clone(s.gpus), Settings: s.settings}
}

// Inventory is the node inventory as published in vgpu.io/devices.
func (sn Snapshot) Inventory() device.Inventory {
	return device.Inventory{
		GPUs:          sn.GPUs,
		SplitCount:    sn.Settings.DeviceSplitCount,
		MemoryScaling: sn.Settings.DeviceMemoryScaling,
	}
}

// GPU returns the GPU with this uuid.
func (sn Snapshot) GPU(uuid string) (device.GPU, bool) {
	for _, g := range sn.GPUs {
		if g.UUID == uuid {
			return g, true
		}
	}
	return device.GPU{}, false
}

// SetHealthy changes one GPU's health; it reports whether anything changed.
func (s *State) SetHealthy(uuid string, healthy bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.gpus {
		if s.gpus[i].UUID == uuid && s.gpus[i].Healthy != healthy {
			s.gpus[i].Healthy = healthy
			s.notifyLocked()
			return true
		}
	}
	return false
}

// SetSettings replaces the settings; it reports whether anything changed.
func (s *State) SetSettings(n settings.Settings) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == s.settings {
		return false
	}
	s.settings = n
	s.notifyLocked()
	return true
}

// Subscribe returns a channel that receives a value after every change.
// Changes coalesce: a slow reader sees one wake-up for several changes and
// reads the latest Snapshot. cancel releases the subscription.
func (s *State) Subscribe() (ch <-chan struct{}, cancel func()) {
	c := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[c] = struct{}{}
	s.mu.Unlock()
	return c, func() {
		s.mu.Lock()
		delete(s.subs, c)
		s.mu.Unlock()
	}
}

func (s *State) notifyLocked() {
	for c := range s.subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}
