// Package config is the webhook's registration with the API server: the
// MutatingWebhookConfiguration and ValidatingWebhookConfiguration that send
// vgpu pods to it, as Go objects (for tests, the demo and --register) and as
// the YAML in webhook.yaml (for Kustomize). A test keeps the two identical.
//
// Scoping is the point of these objects: failurePolicy is Fail, so whatever
// the selectors and match conditions let through cannot be created while the
// webhook is down. Only pods that name a vgpu resource match, never pods of
// the system namespaces or of an opted-out namespace or pod.
package config

import (
	"context"
	_ "embed"
	"encoding/base64"
	"fmt"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-io/vgpu/internal/patch"
	"github.com/vgpu-io/vgpu/lib/contract"
)

// YAML is webhook.yaml: both configurations, pointing at the in-cluster
// Service in contract.DefaultNamespace, with an empty caBundle.
//
//go:embed webhook.yaml
var YAML []byte

const (
	// ConfigurationName names both configuration objects.
	ConfigurationName = "vgpu-webhook"
	// MutatingWebhookName and ValidatingWebhookName appear in the API
	// server's errors ("failed calling webhook ...", "admission webhook
	// ... denied the request").
	MutatingWebhookName   = "mutate.pods.vgpu.io"
	ValidatingWebhookName = "validate.pods.vgpu.io"
	MutatePath            = "/mutate"
	ValidatePath          = "/validate"
	// ServiceName and ServicePort are the in-cluster Service of the webhook.
	ServiceName = "vgpu-webhook"
	ServicePort = 443
	// TimeoutSeconds bounds each call; the API server fails the pod
	// creation after it.
	TimeoutSeconds = 10
)

// ExcludedNamespaces never reach the webhook.
var ExcludedNamespaces = []string{"kube-system", "kube-public", "kube-node-lease", contract.DefaultNamespace}

// matchExpression is the CEL condition "some container or init container
// names a vgpu resource in its limits or requests". Pods that do not match
// are admitted without calling the webhook, even while it is down.
var matchExpression = func() string {
	quoted := make([]string, len(contract.Resources))
	for i, r := range contract.Resources {
		quoted[i] = "'" + r + "'"
	}
	names := "[" + strings.Join(quoted, ", ") + "]"
	ctr := fmt.Sprintf("has(c.resources) && "+
		"((has(c.resources.limits) && c.resources.limits.exists(k, k in %[1]s)) || "+
		"(has(c.resources.requests) && c.resources.requests.exists(k, k in %[1]s)))", names)
	return fmt.Sprintf("object.spec.containers.exists(c, %[1]s) || "+
		"(has(object.spec.initContainers) && object.spec.initContainers.exists(c, %[1]s))", ctr)
}()

// Endpoint is where the API server reaches the webhook.
type Endpoint struct {
	// BaseURL (https://host:port) is used when Service is empty.
	BaseURL string
	// Service in Namespace, port ServicePort, when set.
	Namespace, Service string
	// CABundle is the PEM of the CA that signed the serving certificate.
	CABundle []byte
}

// InCluster is the Service endpoint in namespace.
func InCluster(namespace string, caBundle []byte) Endpoint {
	return Endpoint{Namespace: namespace, Service: ServiceName, CABundle: caBundle}
}

// AtURL is an endpoint outside the cluster, e.g. https://127.0.0.1:9443.
func AtURL(baseURL string, caBundle []byte) Endpoint {
	return Endpoint{BaseURL: strings.TrimSuffix(baseURL, "/"), CABundle: caBundle}
}

func (e Endpoint) client(path string) admissionregistrationv1.WebhookClientConfig {
	cc := admissionregistrationv1.WebhookClientConfig{CABundle: e.CABundle}
	if e.Service != "" {
		port := int32(ServicePort)
		cc.Service = &admissionregistrationv1.ServiceReference{Namespace: e.Namespace, Name: e.Service, Path: &path, Port: &port}
	} else {
		u := e.BaseURL + path
		cc.URL = &u
	}
	return cc
}

// common holds what both webhooks share.
type common struct {
	rules             []admissionregistrationv1.RuleWithOperations
	namespaceSelector *metav1.LabelSelector
	objectSelector    *metav1.LabelSelector
	conditions        []admissionregistrationv1.MatchCondition
	failurePolicy     *admissionregistrationv1.FailurePolicyType
	matchPolicy       *admissionregistrationv1.MatchPolicyType
	sideEffects       *admissionregistrationv1.SideEffectClass
	timeout           *int32
}

func shared() common {
	scope := admissionregistrationv1.NamespacedScope
	fail := admissionregistrationv1.Fail
	equivalent := admissionregistrationv1.Equivalent
	none := admissionregistrationv1.SideEffectClassNone
	timeout := int32(TimeoutSeconds)
	optOut := metav1.LabelSelectorRequirement{Key: contract.LabelOptOut, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"disabled"}}
	return common{
		rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: &scope,
			},
		}},
		namespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: ExcludedNamespaces},
			optOut,
		}},
		objectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{optOut}},
		conditions:     []admissionregistrationv1.MatchCondition{{Name: "asks-for-vgpu", Expression: matchExpression}},
		failurePolicy:  &fail,
		matchPolicy:    &equivalent,
		sideEffects:    &none,
		timeout:        &timeout,
	}
}

// Mutating is the configuration of the mutating webhook (schedulerName,
// default nvidia.com/gpu, denial of invalid requests).
func Mutating(e Endpoint) *admissionregistrationv1.MutatingWebhookConfiguration {
	c := shared()
	never := admissionregistrationv1.NeverReinvocationPolicy
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: ConfigurationName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    MutatingWebhookName,
			ClientConfig:            e.client(MutatePath),
			Rules:                   c.rules,
			FailurePolicy:           c.failurePolicy,
			MatchPolicy:             c.matchPolicy,
			NamespaceSelector:       c.namespaceSelector,
			ObjectSelector:          c.objectSelector,
			SideEffects:             c.sideEffects,
			TimeoutSeconds:          c.timeout,
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      &never,
			MatchConditions:         c.conditions,
		}},
	}
}

// Validating is the configuration of the validating webhook, which checks
// the pod again after every mutating webhook has run.
func Validating(e Endpoint) *admissionregistrationv1.ValidatingWebhookConfiguration {
	c := shared()
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: ConfigurationName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    ValidatingWebhookName,
			ClientConfig:            e.client(ValidatePath),
			Rules:                   c.rules,
			FailurePolicy:           c.failurePolicy,
			MatchPolicy:             c.matchPolicy,
			NamespaceSelector:       c.namespaceSelector,
			ObjectSelector:          c.objectSelector,
			SideEffects:             c.sideEffects,
			TimeoutSeconds:          c.timeout,
			AdmissionReviewVersions: []string{"v1"},
			MatchConditions:         c.conditions,
		}},
	}
}

// Apply creates both configurations, or replaces their webhooks if they
// exist, so that the API server calls e.
func Apply(ctx context.Context, cs kubernetes.Interface, e Endpoint) error {
	m, v := Mutating(e), Validating(e)
	mc := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := mc.Create(ctx, m, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		old, gerr := mc.Get(ctx, m.Name, metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		old.Webhooks = m.Webhooks
		_, err = mc.Update(ctx, old, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("update MutatingWebhookConfiguration %s: %w", m.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("create MutatingWebhookConfiguration %s: %w", m.Name, err)
	}
	vc := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if _, err := vc.Create(ctx, v, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		old, gerr := vc.Get(ctx, v.Name, metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		old.Webhooks = v.Webhooks
		if _, err = vc.Update(ctx, old, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update ValidatingWebhookConfiguration %s: %w", v.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("create ValidatingWebhookConfiguration %s: %w", v.Name, err)
	}
	return nil
}

// PatchCABundle sets the caBundle of vgpu's webhooks in both existing
// configurations called name (JSON patch of each webhook's
// clientConfig.caBundle).
func PatchCABundle(ctx context.Context, cs kubernetes.Interface, name string, caPEM []byte) error {
	// A JSON patch with "test" on the name guards against a configuration
	// whose webhook list was reordered by someone else.
	caBundle := func(name string) []byte {
		return patch.JSON(patch.Op{Op: "test", Path: "/webhooks/0/name", Value: name},
			patch.Op{Op: "add", Path: "/webhooks/0/clientConfig/caBundle", Value: base64.StdEncoding.EncodeToString(caPEM)})
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, name, types.JSONPatchType,
		caBundle(MutatingWebhookName), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch caBundle of MutatingWebhookConfiguration %s: %w", name, err)
	}
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Patch(ctx, name, types.JSONPatchType,
		caBundle(ValidatingWebhookName), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch caBundle of ValidatingWebhookConfiguration %s: %w", name, err)
	}
	return nil
}
