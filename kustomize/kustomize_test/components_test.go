package kustomizetest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// withComponents renders an overlay with optional components added, as a
// user's own kustomization would.
func withComponents(t *testing.T, overlay string, components ...string) []object {
	t.Helper()
	return userOverlay(t, overlay, "", components...)
}

// userOverlay renders a user's kustomization: an overlay, components, and
// extra kustomization text.
func userOverlay(t *testing.T, overlay, extra string, components ...string) []object {
	t.Helper()
	dir := t.TempDir()
	// kustomize takes relative paths only.
	rel := func(p string) string {
		r, err := filepath.Rel(dir, filepath.Join(root(), p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n", rel(overlay))
	for _, c := range components {
		k += "  - " + rel(c) + "\n"
	}
	k += extra
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return renderAbs(t, dir)
}

// A user's overlay points an image elsewhere with the full name, as
// docs/install.md shows; every container of that image follows.
func TestImagesCanBeOverriddenByAnOverlay(t *testing.T) {
	objs := userOverlay(t, "overlays/binpack", "images:\n  - name: ghcr.io/vgpu-io/vgpu-monitor\n    newName: registry.example.com/vgpu-monitor\n    newTag: v9\n")
	c := find[*appsv1.DaemonSet](t, objs, "vgpu-monitor").Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example.com/vgpu-monitor:v9" {
		t.Errorf("monitor image = %s after the override", c.Image)
	}
}

// With cert-manager, the webhook serves the Secret that cert-manager issues
// for the name the API server calls, the CA injector fills both caBundles,
// and the webhook loses the permission it needed to patch them itself.
func TestCertManagerComponent(t *testing.T) {
	objs := withComponents(t, "overlays/binpack", "components/cert-manager")
	cert := find[*Certificate](t, objs, "vgpu-webhook")
	issuer := find[*Issuer](t, objs, cert.Spec.IssuerRef.Name)
	if issuer.Namespace != cert.Namespace || cert.Spec.IssuerRef.Kind != "Issuer" {
		t.Errorf("Certificate %s/%s refers to %s %s", cert.Namespace, cert.Name, cert.Spec.IssuerRef.Kind, issuer.Name)
	}
	svc := find[*corev1.Service](t, objs, "vgpu-webhook")
	if want := svc.Name + "." + svc.Namespace + ".svc"; !slices.Contains(cert.Spec.DNSNames, want) {
		t.Errorf("certificate names %v; the API server calls %s", cert.Spec.DNSNames, want)
	}
	inject := cert.Namespace + "/" + cert.Name
	m := find[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "vgpu-webhook")
	v := find[*admissionregistrationv1.ValidatingWebhookConfiguration](t, objs, "vgpu-webhook")
	for kind, ann := range map[string]map[string]string{"mutating": m.Annotations, "validating": v.Annotations} {
		if ann["cert-manager.io/inject-ca-from"] != inject {
			t.Errorf("%s configuration: inject-ca-from = %q, want %q", kind, ann["cert-manager.io/inject-ca-from"], inject)
		}
	}

	d := find[*appsv1.Deployment](t, objs, "vgpu-webhook")
	spec := d.Spec.Template.Spec
	c := container(t, spec, "webhook")
	certFile, _ := flag(c.Args, "tls-cert-file")
	keyFile, _ := flag(c.Args, "tls-key-file")
	for _, f := range []string{"self-signed", "cert-secret", "webhook-configuration"} {
		for _, a := range c.Args {
			if strings.HasPrefix(a, "--"+f+"=") || a == "--"+f {
				t.Errorf("webhook still has %s", a)
			}
		}
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		for _, vol := range spec.Volumes {
			if vol.Name == vm.Name && vol.Secret != nil && vol.Secret.SecretName == cert.Spec.SecretName &&
				filepath.Dir(certFile) == vm.MountPath && filepath.Dir(keyFile) == vm.MountPath {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("webhook serves %s and %s, not from the Secret %s", certFile, keyFile, cert.Spec.SecretName)
	}
	g := grantsOf(objs, "vgpu-webhook")
	for scope, rules := range g.rules {
		for _, r := range rules {
			if slices.Contains(r.APIGroups, "admissionregistration.k8s.io") || slices.Contains(r.Resources, "secrets") {
				t.Errorf("webhook may still %v %v in %q", r.Verbs, r.Resources, scope)
			}
		}
	}
}

// The ServiceMonitors reach every component's metrics port.
func TestServiceMonitorComponent(t *testing.T) {
	objs := withComponents(t, "overlays/binpack", "components/servicemonitor")
	scraped := map[string]bool{}
	for _, sm := range all[*ServiceMonitor](objs) {
		scrapedBy(t, objs, sm, scraped)
	}
	for _, w := range workloads(objs) {
		if !scraped[w.name] {
			t.Errorf("%s's metrics are not scraped", w.name)
		}
	}
	// The webhook's metrics are behind its serving certificate: Prometheus
	// must check it against the CA of the Secret that holds it.
	hook := find[*ServiceMonitor](t, objs, "vgpu-webhook").Spec.Endpoints[0]
	args := container(t, find[*appsv1.Deployment](t, objs, "vgpu-webhook").Spec.Template.Spec, "webhook").Args
	secret, _ := flag(args, "cert-secret")
	if hook.Scheme != "https" || hook.TLSConfig == nil || hook.TLSConfig.CA.Secret.Key != "ca.crt" ||
		contract.DefaultNamespace+"/"+hook.TLSConfig.CA.Secret.Name != secret {
		t.Errorf("webhook metrics endpoint %+v: want https checked against ca.crt of %s", hook, secret)
	}
}

func scrapedBy(t *testing.T, objs []object, sm *ServiceMonitor, scraped map[string]bool) {
	sel := labels.SelectorFromSet(sm.Spec.Selector.MatchLabels)
	for _, svc := range all[*corev1.Service](objs) {
		if !sel.Matches(labels.Set(svc.Labels)) || !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
			continue
		}
		var target string
		for _, p := range svc.Spec.Ports {
			if p.Name == sm.Spec.Endpoints[0].Port {
				target = p.TargetPort.String()
			}
		}
		if target == "" {
			t.Errorf("Service %s has no port %q", svc.Name, sm.Spec.Endpoints[0].Port)
			continue
		}
		for _, w := range workloads(objs) {
			podLabels := labels.Set(podTemplateLabels(objs, w.name))
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
				continue
			}
			for _, c := range w.spec.Containers {
				for _, p := range c.Ports {
					if p.Name == target {
						scraped[w.name] = true
					}
				}
			}
		}
	}
}

func podTemplateLabels(objs []object, workload string) map[string]string {
	for _, d := range all[*appsv1.Deployment](objs) {
		if "Deployment "+d.Name == workload {
			return d.Spec.Template.Labels
		}
	}
	for _, d := range all[*appsv1.DaemonSet](objs) {
		if "DaemonSet "+d.Name == workload {
			return d.Spec.Template.Labels
		}
	}
	return nil
}
