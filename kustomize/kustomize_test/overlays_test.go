package kustomizetest

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/settings"
)

func settingsOf(t *testing.T, objs []object) settings.Settings {
	t.Helper()
	cm := find[*corev1.ConfigMap](t, objs, contract.SettingsConfigMap)
	if cm.Namespace != contract.DefaultNamespace {
		t.Fatalf("settings ConfigMap in namespace %q, components read it from %q", cm.Namespace, contract.DefaultNamespace)
	}
	// The components parse the ConfigMap with lib/settings, which rejects
	// unknown keys and bad values: so must the manifests.
	s, err := settings.FromData(cm.Data)
	if err != nil {
		t.Fatalf("settings ConfigMap: %v", err)
	}
	return s
}

func TestOverlaysSetTheirPolicies(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want settings.Settings
	}{
		{"base", settings.Default()},
		{"overlays/binpack", settings.Settings{DeviceSplitCount: 10, DeviceMemoryScaling: 1, NodeSchedulerPolicy: settings.Binpack, GPUSchedulerPolicy: settings.Binpack, UnenforcedAction: settings.Report}},
		{"overlays/spread", settings.Settings{DeviceSplitCount: 10, DeviceMemoryScaling: 1, NodeSchedulerPolicy: settings.Spread, GPUSchedulerPolicy: settings.Spread, UnenforcedAction: settings.Report}},
		{"overlays/overcommit", settings.Settings{DeviceSplitCount: 10, DeviceMemoryScaling: 1.5, NodeSchedulerPolicy: settings.Binpack, GPUSchedulerPolicy: settings.Spread, UnenforcedAction: settings.Report}},
		{"overlays/local", settings.Settings{DeviceSplitCount: 10, DeviceMemoryScaling: 1, NodeSchedulerPolicy: settings.Binpack, GPUSchedulerPolicy: settings.Binpack, UnenforcedAction: settings.Report}},
		{"overlays/local-spread", settings.Settings{DeviceSplitCount: 10, DeviceMemoryScaling: 1, NodeSchedulerPolicy: settings.Spread, GPUSchedulerPolicy: settings.Spread, UnenforcedAction: settings.Report}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			if got := settingsOf(t, render(t, tc.dir)); got != tc.want {
				t.Errorf("settings = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The base's settings are lib/settings's defaults, written out: a component
// that finds no ConfigMap behaves as one that finds the base's.
func TestBaseSettingsAreTheDefaults(t *testing.T) {
	cm := find[*corev1.ConfigMap](t, render(t, "base"), contract.SettingsConfigMap)
	want := settings.Default().Data()
	if len(cm.Data) != len(want) {
		t.Fatalf("base settings have keys %v, want exactly %v", cm.Data, want)
	}
	for k, v := range want {
		if cm.Data[k] != v {
			t.Errorf("base setting %s = %q, default is %q", k, cm.Data[k], v)
		}
	}
}
