package kustomizetest

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/vgpu-io/vgpu/lib/config"
	"github.com/vgpu-io/vgpu/lib/contract"
)

func settingsOf(t *testing.T, objs []object) config.Settings {
	t.Helper()
	cm := find[*corev1.ConfigMap](t, objs, contract.SettingsConfigMap)
	if cm.Namespace != contract.DefaultNamespace {
		t.Fatalf("settings ConfigMap in namespace %q, components read it from %q", cm.Namespace, contract.DefaultNamespace)
	}
	// The components parse the ConfigMap with lib/config, which rejects
	// unknown keys and bad values: so must the manifests.
	s, err := config.FromData(cm.Data)
	if err != nil {
		t.Fatalf("settings ConfigMap: %v", err)
	}
	return s
}

func TestOverlaysSetTheirPolicies(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want config.Settings
	}{
		{"base", config.Default()},
		{"overlays/binpack", config.Settings{DeviceSplitCount: 10, DeviceMemoryScaling: 1, NodeSchedulerPolicy: config.Binpack, GPUSchedulerPolicy: config.Binpack}},
		{"overlays/spread", config.Settings{DeviceSplitCount: 10, DeviceMemoryScaling: 1, NodeSchedulerPolicy: config.Spread, GPUSchedulerPolicy: config.Spread}},
		{"overlays/overcommit", config.Settings{DeviceSplitCount: 10, DeviceMemoryScaling: 1.5, NodeSchedulerPolicy: config.Binpack, GPUSchedulerPolicy: config.Spread}},
		{"overlays/local", config.Settings{DeviceSplitCount: 10, DeviceMemoryScaling: 1, NodeSchedulerPolicy: config.Binpack, GPUSchedulerPolicy: config.Binpack}},
		{"overlays/local-spread", config.Settings{DeviceSplitCount: 10, DeviceMemoryScaling: 1, NodeSchedulerPolicy: config.Spread, GPUSchedulerPolicy: config.Spread}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			if got := settingsOf(t, render(t, tc.dir)); got != tc.want {
				t.Errorf("settings = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The base's settings are lib/config's defaults, written out: a component
// that finds no ConfigMap behaves as one that finds the base's.
func TestBaseSettingsAreTheDefaults(t *testing.T) {
	cm := find[*corev1.ConfigMap](t, render(t, "base"), contract.SettingsConfigMap)
	want := config.Default().Data()
	if len(cm.Data) != len(want) {
		t.Fatalf("base settings have keys %v, want exactly %v", cm.Data, want)
	}
	for k, v := range want {
		if cm.Data[k] != v {
			t.Errorf("base setting %s = %q, default is %q", k, cm.Data[k], v)
		}
	}
}
