package config

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// TestYAMLMatchesGo keeps webhook.yaml (used by Kustomize) and the Go
// objects (used by --register and the tests) from drifting apart.
func TestYAMLMatchesGo(t *testing.T) {
	docs := bytes.Split(YAML, []byte("\n---\n"))
	if len(docs) != 2 {
		t.Fatalf("webhook.yaml has %d documents, want 2", len(docs))
	}
	var m admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(docs[0], &m); err != nil {
		t.Fatalf("mutating document: %v", err)
	}
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(docs[1], &v); err != nil {
		t.Fatalf("validating document: %v", err)
	}
	e := InCluster("vgpu-system", nil)
	if want := Mutating(e); !reflect.DeepEqual(&m, want) {
		got, _ := yaml.Marshal(&m)
		w, _ := yaml.Marshal(want)
		t.Errorf("webhook.yaml mutating configuration differs from Mutating():\nyaml:\n%s\ngo:\n%s", got, w)
	}
	if want := Validating(e); !reflect.DeepEqual(&v, want) {
		got, _ := yaml.Marshal(&v)
		w, _ := yaml.Marshal(want)
		t.Errorf("webhook.yaml validating configuration differs from Validating():\nyaml:\n%s\ngo:\n%s", got, w)
	}
}

func TestEndpoints(t *testing.T) {
	m := Mutating(AtURL("https://127.0.0.1:9443/", []byte("CA")))
	cc := m.Webhooks[0].ClientConfig
	if cc.URL == nil || *cc.URL != "https://127.0.0.1:9443/mutate" || cc.Service != nil || string(cc.CABundle) != "CA" {
		t.Errorf("URL endpoint: got %+v", cc)
	}
	v := Validating(InCluster("ns", nil))
	svc := v.Webhooks[0].ClientConfig.Service
	if svc == nil || svc.Namespace != "ns" || svc.Name != ServiceName || *svc.Path != ValidatePath || *svc.Port != ServicePort {
		t.Errorf("service endpoint: got %+v", svc)
	}
	if *m.Webhooks[0].FailurePolicy != admissionregistrationv1.Fail {
		t.Error("failurePolicy must be Fail")
	}
	for _, r := range []string{"nvidia.com/gpu'", "nvidia.com/gpumem'", "nvidia.com/gpumem-percentage'", "nvidia.com/gpucores'", "initContainers"} {
		if !strings.Contains(m.Webhooks[0].MatchConditions[0].Expression, r) {
			t.Errorf("match condition does not mention %s", r)
		}
	}
}
