package versioncmd

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
)

func run(t *testing.T, objs []runtime.Object, args ...string) (string, error) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	cs.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.33.1"}
	cmd := newCommand(func(*options) (kubernetes.Interface, error) { return cs, nil })
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func objects() []runtime.Object {
	vgpu := map[string]string{"app.kubernetes.io/part-of": "vgpu"}
	two := int32(2)
	return []runtime.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "vgpu-system", Name: "vgpu-scheduler", Labels: vgpu},
			Spec: appsv1.DeploymentSpec{Replicas: &two, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "kube-scheduler", Image: "registry.k8s.io/kube-scheduler:v1.33.1"}, {Name: "extender", Image: "vgpu/extender:v0.3.0"}}}}},
			Status: appsv1.DeploymentStatus{ReadyReplicas: 1}},
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "vgpu-system", Name: "vgpu-monitor", Labels: vgpu},
			Spec:   appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "monitor", Image: "vgpu/monitor:v0.2.9"}}}}},
			Status: appsv1.DaemonSetStatus{NumberReady: 3, DesiredNumberScheduled: 3}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "not-vgpu"}},
	}
}

func TestVersionShowsServerAndComponents(t *testing.T) {
	out, err := run(t, objects())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Client Version: dev", "Server Version: v1.33.1",
		"Deployment  vgpu-system  vgpu-scheduler  1/2    extender=vgpu/extender:v0.3.0,kube-scheduler=registry.k8s.io/kube-scheduler:v1.33.1",
		"DaemonSet   vgpu-system  vgpu-monitor    3/3    monitor=vgpu/monitor:v0.2.9"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not-vgpu") {
		t.Errorf("a workload that is not vgpu's is listed:\n%s", out)
	}

	out, err = run(t, objects(), "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var info Info
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if info.ServerVersion != "v1.33.1" || len(info.Components) != 2 || info.Components[0].Images["monitor"] != "vgpu/monitor:v0.2.9" {
		t.Errorf("json %+v", info)
	}
}

func TestClientOnlyNeedsNoCluster(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--client"})
	if err := cmd.Execute(); err != nil || out.String() != "Client Version: dev\n" {
		t.Errorf("--client: %q, %v", out.String(), err)
	}
	// Without --client the client version is still printed, then why the
	// server was not asked.
	out.Reset()
	cmd = NewCommand()
	cmd.SetOut(&out)
	cmd.SetArgs(nil)
	err := cmd.Execute()
	if !strings.HasPrefix(out.String(), "Client Version: dev\n") || err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("no cluster: %q, %v", out.String(), err)
	}
}
