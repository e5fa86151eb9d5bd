package kustomizetest

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/test/cluster"
)

// applier sends rendered objects to a real API server the way
// `kubectl apply --server-side` does: one apply patch per object.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T, c *cluster.Cluster) *applier {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

// apply applies one object; dryRun makes it `--dry-run=server`: the API
// server runs defaulting, validation and admission, and stores nothing.
func (a *applier) apply(ctx context.Context, o object, namespace string, dryRun bool) error {
	m, err := a.mapper.RESTMapping(o.gvk.GroupKind(), o.gvk.Version)
	if err != nil {
		return fmt.Errorf("%s: %w", o.key(), err)
	}
	body, err := yaml.YAMLToJSON(o.yaml)
	if err != nil {
		return err
	}
	meta := o.obj.(interface {
		GetNamespace() string
		GetName() string
	})
	opts := metav1.PatchOptions{FieldManager: "kustomize-test", Force: ptr(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	ri := a.dyn.Resource(m.Resource)
	ns := meta.GetNamespace()
	if ns == "" {
		ns = namespace
	}
	if m.Scope.Name() == "namespace" {
		_, err = ri.Namespace(ns).Patch(ctx, meta.GetName(), types.ApplyPatchType, body, opts)
	} else {
		_, err = ri.Patch(ctx, meta.GetName(), types.ApplyPatchType, body, opts)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", o.key(), err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// Every overlay and the examples pass the real API server's validation and
// admission, object by object, as `kubectl apply -k DIR --dry-run=server`
// sends them; and, where the harness built kubectl, that very command
// succeeds too.
func TestE2EOverlaysApplyOnTheAPIServer(t *testing.T) {
	c := cluster.Run(t, cluster.Options{NoScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := newApplier(t, c)

	// As with kubectl, a dry run cannot create objects in a namespace that
	// does not exist yet: create the namespace first, for real.
	if err := a.apply(ctx, find2(t, render(t, "base"), "Namespace", contract.DefaultNamespace), "", false); err != nil {
		t.Fatal(err)
	}
	for _, dir := range append([]string{"base"}, allOverlays...) {
		for _, o := range render(t, dir) {
			if err := a.apply(ctx, o, "", true); err != nil {
				t.Errorf("%s: %v", dir, err)
			}
		}
	}
	for _, o := range renderAbs(t, filepath.Join(root(), "..", "examples")) {
		if err := a.apply(ctx, o, "default", true); err != nil {
			t.Errorf("examples: %v", err)
		}
	}

	// The optional components, on an overlay. The API server needs their
	// custom resource definitions; stand-ins that accept any spec are
	// enough to check everything the components change in vgpu's own
	// objects (the webhook Deployment, its RBAC, the Services).
	for _, crd := range []struct{ group, kind, plural string }{
		{"cert-manager.io", "Issuer", "issuers"},
		{"cert-manager.io", "Certificate", "certificates"},
		{"monitoring.coreos.com", "ServiceMonitor", "servicemonitors"},
	} {
		if err := createStandInCRD(ctx, a.dyn, crd.group, crd.kind, crd.plural); err != nil {
			t.Fatal(err)
		}
	}
	a.mapper.Reset()
	for _, o := range withComponents(t, "overlays/binpack", "components/cert-manager", "components/servicemonitor") {
		if err := a.apply(ctx, o, "", true); err != nil {
			t.Errorf("overlays/binpack with both components: %v", err)
		}
	}

	bins, err := cluster.FindBinaries()
	if err != nil || bins.Kubectl == "" {
		t.Logf("kubectl not built (%v): the kubectl command line is not tried", err)
		return
	}
	for _, dir := range append([]string{"base"}, allOverlays...) {
		out, err := exec.CommandContext(ctx, bins.Kubectl, "--kubeconfig", c.Kubeconfig,
			"apply", "-k", filepath.Join(root(), dir), "--dry-run=server").CombinedOutput()
		if err != nil {
			t.Errorf("kubectl apply -k %s --dry-run=server: %v\n%s", dir, err, out)
		}
	}
}

func find2(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	for _, o := range objs {
		if o.gvk.Kind == kind && o.obj.(interface{ GetName() string }).GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s", kind, name)
	return object{}
}

// With the manifests really applied, the API server's authorizer gives each
// component's ServiceAccount what it needs and refuses the rest; and with the
// webhook configured but not running, only vgpu pods outside the excluded
// namespaces are refused.
func TestE2EInstalledRBACAndWebhookScope(t *testing.T) {
	c := cluster.Run(t, cluster.Options{NoScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a := newApplier(t, c)
	objs := render(t, "overlays/binpack")
	// Namespace first, then everything else.
	for _, kind := range []bool{true, false} {
		for _, o := range objs {
			if (o.gvk.Kind == "Namespace") == kind {
				if err := a.apply(ctx, o, "", false); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	ns := contract.DefaultNamespace
	type check struct {
		verb, group, resource, sub, namespace, name string
		allowed                                     bool
	}
	for sa, checks := range map[string][]check{
		"vgpu-scheduler": {
			{"create", "", "pods", "binding", "default", "p", true},
			{"patch", "", "pods", "", "default", "p", true},
			{"list", "", "nodes", "", "", "", true},
			{"update", "coordination.k8s.io", "leases", "", ns, contract.DefaultSchedulerName, true},
			{"watch", "", "configmaps", "", ns, contract.SettingsConfigMap, true},
			// From system:kube-scheduler, bound, not copied.
			{"list", "storage.k8s.io", "csinodes", "", "", "", true},
			{"create", "", "pods", "", "default", "", false},
			{"update", "", "nodes", "", "", "gpu-node-1", false},
			{"get", "", "secrets", "", ns, "vgpu-webhook-tls", false},
			{"get", "", "configmaps", "", ns, "other", false},
		},
		"vgpu-webhook": {
			{"list", "", "nodes", "", "", "", true},
			{"patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", "vgpu-webhook", true},
			{"patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "", "vgpu-webhook", true},
			{"patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", "someone-elses", false},
			{"get", "", "secrets", "", ns, "vgpu-webhook-tls", true},
			{"create", "", "secrets", "", ns, "", true},
			{"update", "", "secrets", "", ns, "vgpu-webhook-tls", false},
			{"create", "", "pods", "", "default", "", false},
			{"get", "", "secrets", "", ns, "x", false},
			{"get", "", "secrets", "", "default", "vgpu-webhook-tls", false},
		},
		"vgpu-device-plugin": {
			{"patch", "", "nodes", "", "", "gpu-node-1", true},
			{"watch", "", "nodes", "", "", "gpu-node-1", true},
			{"list", "", "pods", "", "", "", true},
			{"patch", "", "pods", "", "default", "p", true},
			{"list", "", "configmaps", "", ns, contract.SettingsConfigMap, true},
			{"get", "", "configmaps", "", ns, "other", false},
			{"patch", "", "nodes", "status", "", "gpu-node-1", false},
			{"delete", "", "pods", "", "default", "p", false},
			{"get", "", "secrets", "", ns, "x", false},
		},
		"vgpu-monitor": {
			{"list", "", "pods", "", "", "", true},
			{"watch", "", "nodes", "", "", "", true},
			{"create", "", "pods", "eviction", "default", "p", true},
			{"create", "", "events", "", "default", "", true},
			{"watch", "", "configmaps", "", ns, contract.SettingsConfigMap, true},
			{"get", "", "configmaps", "", ns, "other", false},
			{"delete", "", "pods", "", "default", "p", false},
			{"patch", "", "pods", "", "default", "p", false},
			{"get", "", "secrets", "", ns, "x", false},
		},
	} {
		for _, ch := range checks {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:" + ns + ":" + sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: ch.verb, Group: ch.group, Resource: ch.resource, Subresource: ch.sub, Namespace: ch.namespace, Name: ch.name,
				},
			}}
			got, err := c.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Status.Allowed != ch.allowed {
				t.Errorf("%s may %s %s/%s %s in %q named %q: %v, want %v (%s)", sa, ch.verb, ch.group, ch.resource, ch.sub,
					ch.namespace, ch.name, got.Status.Allowed, ch.allowed, got.Status.Reason)
			}
		}
	}

	// The webhook is configured and nothing serves it.
	gpuPod := func(name string) *corev1.Pod {
		return testutil.Pod(name, testutil.Container("main", contract.ResourceMemory, "1000", contract.ResourceCores, "10"))
	}
	cpuPod := testutil.Pod("cpu", testutil.Container("main"))
	const optOut = "opted-out"
	if err := c.CreateNamespace(ctx, optOut); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Namespaces().Patch(ctx, optOut, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"`+contract.LabelOptOut+`":"disabled"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	labelled := gpuPod("labelled")
	labelled.Labels = map[string]string{contract.LabelOptOut: "disabled"}
	for _, tc := range []struct {
		what      string
		namespace string
		pod       *corev1.Pod
		refused   bool
	}{
		{"a pod without vgpu resources", "default", cpuPod, false},
		{"a vgpu pod", "default", gpuPod("gpu"), true},
		{"a vgpu pod in an opted-out namespace", optOut, gpuPod("gpu"), false},
		{"a vgpu pod labelled to opt out", "default", labelled, false},
		{"a vgpu pod in vgpu's own namespace", ns, gpuPod("gpu"), false},
	} {
		tc.pod.Namespace = tc.namespace
		_, err := c.Client.CoreV1().Pods(tc.namespace).Create(ctx, tc.pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case tc.refused && err == nil:
			t.Errorf("%s was admitted while the webhook is down", tc.what)
		case tc.refused && !strings.Contains(err.Error(), "vgpu.io"):
			t.Errorf("%s was refused, but not by vgpu's webhook: %v", tc.what, err)
		case !tc.refused && err != nil:
			t.Errorf("%s depends on the webhook: %v", tc.what, err)
		}
	}
}

// createStandInCRD defines a namespaced custom resource that accepts any
// spec, and waits until the API server serves it.
func createStandInCRD(ctx context.Context, dyn dynamic.Interface, group, kind, plural string) error {
	name := plural + "." + group
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"group": group,
			"names": map[string]any{"kind": kind, "plural": plural},
			"scope": "Namespaced",
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object", "x-kubernetes-preserve-unknown-fields": true,
				}},
			}},
		},
	}}
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		return err
	}
	for {
		got, err := crds.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not established: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
