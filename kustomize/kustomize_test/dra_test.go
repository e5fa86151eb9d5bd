package kustomizetest

import (
	"slices"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/component-helpers/auth/rbac/validation"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// The dra overlay is the base plus: the DeviceClass every vgpu claim names,
// the node agent and the webhook in DRA mode, and the permissions DRA mode
// needs, no more (docs/dra.md).
func TestDRAOverlay(t *testing.T) {
	objs := render(t, "overlays/dra")
	if got := settingsOf(t, objs); got != settings.Default() {
		t.Errorf("settings %+v: the dra overlay keeps the defaults", got)
	}
	dc := find[*resourcev1.DeviceClass](t, objs, dra.DeviceClass)
	if len(dc.Spec.Selectors) != 1 || dc.Spec.Selectors[0].CEL == nil || dc.Spec.Selectors[0].CEL.Expression != `device.driver == "`+dra.Driver+`"` {
		t.Errorf("DeviceClass selectors %+v: want the driver %s", dc.Spec.Selectors, dra.Driver)
	}
	if dc.Spec.ExtendedResourceName != nil {
		t.Errorf("DeviceClass maps %s: the extender path would book the same GPUs", *dc.Spec.ExtendedResourceName)
	}
	ds := find[*appsv1.DaemonSet](t, objs, "vgpu-device-plugin")
	if !slices.Contains(ds.Spec.Template.Spec.Containers[0].Args, "--mode=dra") {
		t.Errorf("device plugin args %v: want --mode=dra", ds.Spec.Template.Spec.Containers[0].Args)
	}
	// The kubelet finds the driver in its plugin registry and dials its DRA
	// socket; the container runtime reads the CDI specs prepare writes.
	// Each must be the host's own directory at the same path.
	for _, dir := range []string{"/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins/" + dra.Driver, "/var/run/cdi"} {
		if !slices.ContainsFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
			return v.HostPath != nil && v.HostPath.Path == dir && slices.ContainsFunc(ds.Spec.Template.Spec.Containers[0].VolumeMounts,
				func(m corev1.VolumeMount) bool { return m.Name == v.Name && m.MountPath == dir })
		}) {
			t.Errorf("device plugin does not mount the host's %s at the same path", dir)
		}
	}
	mon := find[*appsv1.DaemonSet](t, objs, "vgpu-monitor")
	if !slices.Contains(mon.Spec.Template.Spec.Containers[0].Args, "--mode=dra") {
		t.Errorf("monitor args %v: want --mode=dra (shares from claims)", mon.Spec.Template.Spec.Containers[0].Args)
	}
	if !slices.ContainsFunc(mon.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.HostPath != nil && v.HostPath.Path == contract.HostClaimsDir && slices.ContainsFunc(mon.Spec.Template.Spec.Containers[0].VolumeMounts,
			func(m corev1.VolumeMount) bool {
				return m.Name == v.Name && m.MountPath == contract.HostClaimsDir && !m.ReadOnly
			})
	}) {
		t.Errorf("monitor does not mount %s read-write: it feeds the claims' regions", contract.HostClaimsDir)
	}
	wh := find[*appsv1.Deployment](t, objs, "vgpu-webhook")
	if !slices.Contains(wh.Spec.Template.Spec.Containers[0].Args, "--mode=dra") {
		t.Errorf("webhook args %v: want --mode=dra", wh.Spec.Template.Spec.Containers[0].Args)
	}
	mw := find[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "vgpu-webhook")
	if se := mw.Webhooks[0].SideEffects; se == nil || *se != admissionregistrationv1.SideEffectClassNoneOnDryRun {
		t.Errorf("mutating webhook sideEffects %v: it creates templates, so NoneOnDryRun", se)
	}
	res := []string{"resource.k8s.io"}
	base := render(t, "overlays/binpack")
	for sa, want := range map[string][]rbacv1.PolicyRule{
		"vgpu-device-plugin": {
			rule(res, []string{"resourceslices"}, []string{"get", "list", "watch", "create", "update", "delete"}),
			// The kubelet's DRA service reads the claims it prepares.
			rule(res, []string{"resourceclaims"}, []string{"get"}),
		},
		"vgpu-monitor": {rule(res, []string{"resourceslices", "resourceclaims"}, []string{"list", "watch"})},
		"vgpu-webhook": {
			rule(res, []string{"resourceslices"}, []string{"list", "watch"}),
			rule(res, []string{"resourceclaimtemplates"}, []string{"create"}),
		},
	} {
		got := grantsOf(objs, sa).rules[""]
		added := slices.Concat(grantsOf(base, sa).rules[""], want)
		if ok, extra := validation.Covers(added, got); !ok {
			t.Errorf("%s may do more than DRA mode needs: %v", sa, extra)
		}
		if ok, missing := validation.Covers(got, added); !ok {
			t.Errorf("%s lacks %v", sa, missing)
		}
	}
}
