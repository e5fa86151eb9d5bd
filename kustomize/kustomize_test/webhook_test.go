package kustomizetest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// webhookOwnYAML is the webhook's own registration, next to its code.
var webhookOwnYAML = filepath.Join("..", "cmd", "webhook", "config", "webhook.yaml")

// decodeAll decodes every document of a YAML stream strictly.
func decodeAll(t *testing.T, b []byte) []object {
	t.Helper()
	var objs []object
	r := yaml.NewYAMLReader(bufioReader(b))
	for {
		doc, err := r.Read()
		if err != nil {
			break
		}
		if strings.TrimSpace(string(doc)) == "" {
			continue
		}
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decoding: %v\n%s", err, doc)
		}
		objs = append(objs, object{gvk: *gvk, obj: obj, yaml: doc})
	}
	return objs
}

// The manifests carry a copy of the webhook's own registration, which the
// webhook's tests keep equal to the objects its code builds: the copy must
// not drift from it.
func TestWebhookConfigurationsAreTheWebhooksOwn(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root(), webhookOwnYAML))
	if err != nil {
		t.Fatalf("the webhook's registration: %v", err)
	}
	own := decodeAll(t, b)
	objs := render(t, "overlays/binpack")
	for _, o := range own {
		switch want := o.obj.(type) {
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			got := find[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, want.Name)
			if !reflect.DeepEqual(got.Webhooks, want.Webhooks) {
				t.Errorf("MutatingWebhookConfiguration %s differs from %s:\n%s", want.Name, webhookOwnYAML, o.yaml)
			}
		case *admissionregistrationv1.ValidatingWebhookConfiguration:
			got := find[*admissionregistrationv1.ValidatingWebhookConfiguration](t, objs, want.Name)
			if !reflect.DeepEqual(got.Webhooks, want.Webhooks) {
				t.Errorf("ValidatingWebhookConfiguration %s differs from %s:\n%s", want.Name, webhookOwnYAML, o.yaml)
			}
		default:
			t.Errorf("%s has an unexpected %s", webhookOwnYAML, o.key())
		}
	}
	if len(own) != 2 {
		t.Errorf("%s has %d objects, want the two webhook configurations", webhookOwnYAML, len(own))
	}
}

// A pod that asks for a vgpu resource must never be admitted unchecked, and
// the API server must reach the webhook: configuration → Service → port of
// the Deployment's container.
func TestWebhookIsReachableAndFailsClosed(t *testing.T) {
	objs := render(t, "overlays/binpack")
	var refs []*admissionregistrationv1.ServiceReference
	m := find[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "vgpu-webhook")
	for _, w := range m.Webhooks {
		if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail {
			t.Errorf("mutating webhook %s: failurePolicy is not Fail", w.Name)
		}
		refs = append(refs, w.ClientConfig.Service)
	}
	v := find[*admissionregistrationv1.ValidatingWebhookConfiguration](t, objs, "vgpu-webhook")
	for _, w := range v.Webhooks {
		if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail {
			t.Errorf("validating webhook %s: failurePolicy is not Fail", w.Name)
		}
		refs = append(refs, w.ClientConfig.Service)
	}
	d := find[*appsv1.Deployment](t, objs, "vgpu-webhook")
	c := container(t, d.Spec.Template.Spec, "webhook")
	for _, ref := range refs {
		if ref == nil {
			t.Fatal("a webhook is not called through a Service")
		}
		svc := find[*corev1.Service](t, objs, ref.Name)
		if svc.Namespace != ref.Namespace {
			t.Errorf("webhook calls Service %s/%s, which is in %s", ref.Namespace, ref.Name, svc.Namespace)
		}
		var target string
		for _, p := range svc.Spec.Ports {
			if ref.Port != nil && p.Port == *ref.Port {
				target = p.TargetPort.String()
			}
		}
		if target == "" {
			t.Fatalf("Service %s has no port %v", svc.Name, ref.Port)
		}
		var port int32
		for _, p := range c.Ports {
			if p.Name == target {
				port = p.ContainerPort
			}
		}
		if port == 0 {
			t.Fatalf("Service %s targets port %s, which the webhook container does not declare", svc.Name, target)
		}
		for k, want := range svc.Spec.Selector {
			if d.Spec.Template.Labels[k] != want {
				t.Errorf("Service %s selects %s=%s, the webhook's pods are labelled %v", svc.Name, k, want, d.Spec.Template.Labels)
			}
		}
		if listen, _ := flag(c.Args, webhookListenFlag); !strings.HasSuffix(listen, ":"+itoa(port)) {
			t.Errorf("webhook listens on --%s=%q, its Service sends to port %d", webhookListenFlag, listen, port)
		}
	}
	// The pods of vgpu itself never wait on the webhook.
	nsObj := find[*corev1.Namespace](t, objs, contract.DefaultNamespace)
	if nsObj.Labels[contract.LabelOptOut] != "disabled" {
		t.Errorf("namespace %s is not labelled %s=disabled", nsObj.Name, contract.LabelOptOut)
	}
}
