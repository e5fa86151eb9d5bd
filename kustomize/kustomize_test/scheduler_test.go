package kustomizetest

import (
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kubeschedulerv1 "k8s.io/kube-scheduler/config/v1"

	schedconfig "github.com/vgpu-io/vgpu/cmd/extender/config"
	"github.com/vgpu-io/vgpu/lib/contract"
)

// decodeSchedulerConfig decodes a KubeSchedulerConfiguration strictly, as
// kube-scheduler does at start: an unknown field is an error.
func decodeSchedulerConfig(t *testing.T, data []byte) *kubeschedulerv1.KubeSchedulerConfiguration {
	t.Helper()
	cfg, err := schedconfig.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// flag returns the value of --name=value in args.
func flag(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// schedulerConfig follows the scheduler Deployment's --config flag to the
// ConfigMap (named with kustomize's content hash) that holds the file.
func schedulerConfig(t *testing.T, objs []object) (*appsv1.Deployment, *kubeschedulerv1.KubeSchedulerConfiguration) {
	t.Helper()
	d := find[*appsv1.Deployment](t, objs, "vgpu-scheduler")
	ks := container(t, d.Spec.Template.Spec, "kube-scheduler")
	file, ok := flag(ks.Command, "config")
	if !ok {
		t.Fatalf("kube-scheduler has no --config: %v", ks.Command)
	}
	for _, m := range ks.VolumeMounts {
		if path.Dir(file) != m.MountPath {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				cm := find[*corev1.ConfigMap](t, objs, v.ConfigMap.Name)
				data, ok := cm.Data[path.Base(file)]
				if !ok {
					t.Fatalf("ConfigMap %s has no key %s", cm.Name, path.Base(file))
				}
				return d, decodeSchedulerConfig(t, []byte(data))
			}
		}
	}
	t.Fatalf("--config=%s is not in a mounted ConfigMap", file)
	return nil, nil
}

func TestSchedulerConfiguration(t *testing.T) {
	objs := render(t, "overlays/binpack")
	d, cfg := schedulerConfig(t, objs)

	if len(cfg.Profiles) != 1 || cfg.Profiles[0].SchedulerName == nil || *cfg.Profiles[0].SchedulerName != contract.DefaultSchedulerName {
		t.Errorf("profiles = %+v, want one named %s (the name the webhook sets on vgpu pods)", cfg.Profiles, contract.DefaultSchedulerName)
	}
	le := cfg.LeaderElection
	if le.LeaderElect == nil || !*le.LeaderElect || le.ResourceNamespace != contract.DefaultNamespace || le.ResourceName != contract.DefaultSchedulerName {
		t.Errorf("leaderElection = elect %v, lease %s/%s; want a lease %s/%s (its Role allows only that one)",
			le.LeaderElect, le.ResourceNamespace, le.ResourceName, contract.DefaultNamespace, contract.DefaultSchedulerName)
	}
	if *d.Spec.Replicas < 2 {
		t.Errorf("scheduler has %d replicas; leader election is there for a standby", *d.Spec.Replicas)
	}

	if len(cfg.Extenders) != 1 {
		t.Fatalf("%d extenders, want 1", len(cfg.Extenders))
	}
	ext := cfg.Extenders[0]
	if ext.FilterVerb == "" || ext.PrioritizeVerb == "" || ext.BindVerb == "" || !ext.NodeCacheCapable || ext.Ignorable {
		t.Errorf("extender %+v: want filter, prioritize and bind verbs, nodeCacheCapable, not ignorable", ext)
	}
	managed := map[string]bool{}
	for _, r := range ext.ManagedResources {
		managed[r.Name] = r.IgnoredByScheduler
	}
	for _, r := range contract.Resources {
		ignored, ok := managed[r]
		if !ok {
			t.Errorf("extender does not manage %s", r)
		}
		// kube-scheduler counts nvidia.com/gpu itself (docs/contract.md#node-inventory); the
		// shares are no node resource it could count.
		if want := r != contract.ResourceGPU; ignored != want {
			t.Errorf("%s ignoredByScheduler = %v, want %v", r, ignored, want)
		}
	}
	if len(managed) != len(contract.Resources) {
		t.Errorf("extender manages %v, want exactly %v", managed, contract.Resources)
	}

	// The scheduler reaches its sidecar on loopback, at the address the
	// sidecar is told to listen on.
	u, err := url.Parse(ext.URLPrefix)
	if err != nil {
		t.Fatalf("urlPrefix %q: %v", ext.URLPrefix, err)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		t.Errorf("extender urlPrefix %s is not on loopback", ext.URLPrefix)
	}
	listen, ok := flag(container(t, d.Spec.Template.Spec, "extender").Args, extenderListenFlag)
	if !ok || listen != u.Host {
		t.Errorf("extender listens on --%s=%s, kube-scheduler calls %s", extenderListenFlag, listen, u.Host)
	}
}

// The manifests carry a copy of the extender's own scheduler configuration,
// which the extender's tests run against the real kube-scheduler: the copy
// must not drift from it.
func TestSchedulerConfigurationIsTheExtendersOwn(t *testing.T) {
	own := filepath.Join("..", "cmd", "extender", "config", "scheduler-config.yaml")
	b, err := os.ReadFile(filepath.Join(root(), own))
	if err != nil {
		t.Fatalf("the extender's scheduler configuration: %v", err)
	}
	want := decodeSchedulerConfig(t, b)
	_, got := schedulerConfig(t, render(t, "overlays/binpack"))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the scheduler configuration in kustomize/base/scheduler differs from %s", own)
	}
}
