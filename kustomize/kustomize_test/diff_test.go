package kustomizetest

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// sameExcept checks that two renderings hold the same objects, equal field
// by field, except for the given keys of the settings ConfigMap.
func sameExcept(t *testing.T, aDir, bDir string, settingsKeys ...string) {
	t.Helper()
	a, b := render(t, aDir), render(t, bDir)
	if keys(a) != keys(b) {
		t.Fatalf("%s renders\n  %s\nbut %s renders\n  %s", aDir, keys(a), bDir, keys(b))
	}
	differ := map[string]bool{}
	for i := range a {
		ao, bo := a[i].obj.DeepCopyObject(), b[i].obj.DeepCopyObject()
		if acm, ok := ao.(*corev1.ConfigMap); ok && acm.Name == contract.SettingsConfigMap {
			bcm := bo.(*corev1.ConfigMap)
			for _, k := range settingsKeys {
				if acm.Data[k] != bcm.Data[k] {
					differ[k] = true
				}
				delete(acm.Data, k)
				delete(bcm.Data, k)
			}
		}
		if !reflect.DeepEqual(ao, bo) {
			t.Errorf("%s differs between %s and %s:\n--- %s\n%s--- %s\n%s", a[i].key(), aDir, bDir, aDir, a[i].yaml, bDir, b[i].yaml)
		}
	}
	// The keys that may differ must differ, or the overlay does nothing.
	for _, k := range settingsKeys {
		if !differ[k] {
			t.Errorf("setting %s is the same in %s and %s", k, aDir, bDir)
		}
	}
}

func TestPolicyOverlaysDifferOnlyInThePolicies(t *testing.T) {
	sameExcept(t, "overlays/binpack", "overlays/spread", settings.KeyNodeSchedulerPolicy, settings.KeyGPUSchedulerPolicy)
	sameExcept(t, "overlays/local", "overlays/local-spread", settings.KeyNodeSchedulerPolicy, settings.KeyGPUSchedulerPolicy)
}

func TestOvercommitDiffersOnlyInMemoryScaling(t *testing.T) {
	sameExcept(t, "base", "overlays/overcommit", settings.KeyDeviceMemoryScaling)
}

// The local overlays, for components run outside the cluster, hold exactly
// the namespace and settings of the in-cluster overlays.
func TestLocalOverlaysMatchTheInClusterOnes(t *testing.T) {
	for local, full := range map[string]string{"overlays/local": "overlays/binpack", "overlays/local-spread": "overlays/spread"} {
		l, f := render(t, local), render(t, full)
		byKey := map[string]object{}
		for _, o := range f {
			byKey[o.key()] = o
		}
		if len(l) != 2 {
			t.Errorf("%s renders %s, want only the namespace and the settings", local, keys(l))
		}
		for _, o := range l {
			fo, ok := byKey[o.key()]
			if !ok {
				t.Errorf("%s has %s, which %s lacks", local, o.key(), full)
				continue
			}
			if !reflect.DeepEqual(o.obj, fo.obj) {
				t.Errorf("%s differs between %s and %s:\n%s---\n%s", o.key(), local, full, o.yaml, fo.yaml)
			}
		}
	}
}
