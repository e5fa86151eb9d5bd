// Package settings holds the cluster settings (docs/settings.md), as read from the
// vgpu-settings ConfigMap by every component.
package settings

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Policy picks among candidates that fit: the fullest, the emptiest, or
// the one whose use least fragments the cluster for the pods it receives
// (docs/placement.md).
type Policy string

const (
	Binpack       Policy = "binpack"
	Spread        Policy = "spread"
	Fragmentation Policy = "fragmentation"
)

// ParsePolicy accepts a policy name, case-insensitively.
func ParsePolicy(s string) (Policy, error) {
	switch Policy(strings.ToLower(strings.TrimSpace(s))) {
	case Binpack:
		return Binpack, nil
	case Spread:
		return Spread, nil
	case Fragmentation:
		return Fragmentation, nil
	}
	return "", fmt.Errorf("policy %q: must be %q, %q or %q", s, Binpack, Spread, Fragmentation)
}

// UnenforcedAction is what the monitor does with a container whose limits
// are not enforced (docs/settings.md).
type UnenforcedAction string

const (
	// Report exports the container as unenforced and records an Event.
	Report UnenforcedAction = "report"
	// Evict also evicts the pod through the Eviction API: fail closed.
	Evict UnenforcedAction = "evict"
)

// ParseUnenforcedAction accepts an action name, case-insensitively.
func ParseUnenforcedAction(s string) (UnenforcedAction, error) {
	switch a := UnenforcedAction(strings.ToLower(strings.TrimSpace(s))); a {
	case Report, Evict:
		return a, nil
	}
	return "", fmt.Errorf("action %q: must be %q or %q", s, Report, Evict)
}

// Keys of the settings ConfigMap's data.
const (
	KeyDeviceSplitCount    = "deviceSplitCount"
	KeyDeviceMemoryScaling = "deviceMemoryScaling"
	KeyNodeSchedulerPolicy = "nodeSchedulerPolicy"
	KeyGPUSchedulerPolicy  = "gpuSchedulerPolicy"
	KeyUnenforcedAction    = "unenforcedAction"
)

// Settings are the cluster-wide knobs.
type Settings struct {
	DeviceSplitCount    int     `json:"deviceSplitCount"`
	DeviceMemoryScaling float64 `json:"deviceMemoryScaling"`
	NodeSchedulerPolicy Policy  `json:"nodeSchedulerPolicy"`
	GPUSchedulerPolicy  Policy  `json:"gpuSchedulerPolicy"`
	// UnenforcedAction is read by the monitor only.
	UnenforcedAction UnenforcedAction `json:"unenforcedAction"`
}

// MaxSplitCount bounds deviceSplitCount; more vGPUs than this on one GPU is
// certainly a typo, and the kubelet would be handed a huge device list.
const MaxSplitCount = 1000

// Default returns the settings used when the ConfigMap is absent or silent.
func Default() Settings {
	return Settings{
		DeviceSplitCount:    10,
		DeviceMemoryScaling: 1,
		NodeSchedulerPolicy: Binpack,
		GPUSchedulerPolicy:  Spread,
		UnenforcedAction:    Report,
	}
}

// FromData parses a ConfigMap's data over the defaults. Unknown keys are an
// error, so that a misspelt setting does not silently keep its default.
func FromData(data map[string]string) (Settings, error) {
	s := Default()
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := strings.TrimSpace(data[k])
		switch k {
		case KeyDeviceSplitCount:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxSplitCount {
				return s, fmt.Errorf("setting %s=%q: must be an integer from 1 to %d", k, v, MaxSplitCount)
			}
			s.DeviceSplitCount = n
		case KeyDeviceMemoryScaling:
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsNaN(f) || f < 1 || f > 100 {
				return s, fmt.Errorf("setting %s=%q: must be a number from 1 to 100", k, v)
			}
			s.DeviceMemoryScaling = f
		case KeyNodeSchedulerPolicy, KeyGPUSchedulerPolicy:
			p, err := ParsePolicy(v)
			if err != nil {
				return s, fmt.Errorf("setting %s: %v", k, err)
			}
			if k == KeyNodeSchedulerPolicy {
				s.NodeSchedulerPolicy = p
			} else {
				s.GPUSchedulerPolicy = p
			}
		case KeyUnenforcedAction:
			a, err := ParseUnenforcedAction(v)
			if err != nil {
				return s, fmt.Errorf("setting %s: %v", k, err)
			}
			s.UnenforcedAction = a
		default:
			return s, fmt.Errorf("setting %q is unknown: the settings are %s, %s, %s, %s and %s",
				k, KeyDeviceSplitCount, KeyDeviceMemoryScaling, KeyNodeSchedulerPolicy, KeyGPUSchedulerPolicy, KeyUnenforcedAction)
		}
	}
	return s, nil
}

// Data renders settings as ConfigMap data, the inverse of FromData.
func (s Settings) Data() map[string]string {
	return map[string]string{
		KeyDeviceSplitCount:    strconv.Itoa(s.DeviceSplitCount),
		KeyDeviceMemoryScaling: strconv.FormatFloat(s.DeviceMemoryScaling, 'g', -1, 64),
		KeyNodeSchedulerPolicy: string(s.NodeSchedulerPolicy),
		KeyGPUSchedulerPolicy:  string(s.GPUSchedulerPolicy),
		KeyUnenforcedAction:    string(s.UnenforcedAction),
	}
}
