package kustomizetest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// workload is a pod template with the name of what owns it.
type workload struct {
	name string
	spec corev1.PodSpec
}

func workloads(objs []object) []workload {
	var ws []workload
	for _, d := range all[*appsv1.Deployment](objs) {
		ws = append(ws, workload{"Deployment " + d.Name, d.Spec.Template.Spec})
	}
	for _, d := range all[*appsv1.DaemonSet](objs) {
		ws = append(ws, workload{"DaemonSet " + d.Name, d.Spec.Template.Spec})
	}
	return ws
}

var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"MutatingWebhookConfiguration": true, "ValidatingWebhookConfiguration": true,
}

// Everything namespaced lives in vgpu-system, where the components look for
// their settings and Secret, except the one binding that must live in
// kube-system.
func TestEverythingIsInTheVGPUNamespace(t *testing.T) {
	for _, o := range render(t, "overlays/binpack") {
		ns := o.obj.(interface{ GetNamespace() string }).GetNamespace()
		switch {
		case clusterScoped[o.gvk.Kind]:
			if ns != "" {
				t.Errorf("%s is cluster-scoped but has namespace %q", o.key(), ns)
			}
		case o.key() == "RoleBinding kube-system/vgpu-scheduler-authentication-reader":
		case ns != contract.DefaultNamespace:
			t.Errorf("%s is not in namespace %s", o.key(), contract.DefaultNamespace)
		}
	}
}

// Each component runs under a ServiceAccount of its own, so that its RBAC is
// its alone.
func TestOneServiceAccountPerComponent(t *testing.T) {
	objs := render(t, "overlays/binpack")
	accounts := map[string]bool{}
	for _, sa := range all[*corev1.ServiceAccount](objs) {
		accounts[sa.Name] = false
	}
	for _, w := range workloads(objs) {
		sa := w.spec.ServiceAccountName
		used, ok := accounts[sa]
		switch {
		case !ok:
			t.Errorf("%s runs as ServiceAccount %q, which the manifests do not create", w.name, sa)
		case used:
			t.Errorf("%s shares ServiceAccount %q with another component", w.name, sa)
		}
		accounts[sa] = true
	}
	for sa, used := range accounts {
		if !used {
			t.Errorf("ServiceAccount %s is used by no workload", sa)
		}
	}
	if len(accounts) != 4 {
		t.Errorf("%d ServiceAccounts, want 4 (scheduler, webhook, device plugin, monitor)", len(accounts))
	}
}

// baseImages reads the images: list of kustomize/base, the one place where
// images are named.
func baseImages(t *testing.T) map[string]string {
	t.Helper()
	var k types.Kustomization
	b, err := os.ReadFile(filepath.Join(root(), "base", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("base/kustomization.yaml: %v", err)
	}
	out := map[string]string{}
	for _, im := range k.Images {
		out[im.Name] = im.NewName + ":" + im.NewTag
	}
	return out
}

func TestImagesAreNamedInOnePlace(t *testing.T) {
	images := baseImages(t)
	// No other kustomization names an image.
	err := filepath.WalkDir(root(), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "kustomization.yaml" || path == filepath.Join(root(), "base", "kustomization.yaml") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var k types.Kustomization
		if err := yaml.Unmarshal(b, &k); err != nil {
			return err
		}
		if len(k.Images) > 0 {
			t.Errorf("%s sets images; base/kustomization.yaml is the one place for them", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, dir := range policyOverlays {
		for _, w := range workloads(render(t, dir)) {
			for _, c := range slices.Concat(w.spec.InitContainers, w.spec.Containers) {
				found := false
				for short, full := range images {
					if c.Image == full {
						used[short], found = true, true
					}
				}
				if !found {
					t.Errorf("%s: %s: container %s has image %q, not one of base's images %v", dir, w.name, c.Name, c.Image, images)
				}
			}
		}
	}
	for short := range images {
		if !used[short] {
			t.Errorf("base names image %s, which no container uses", short)
		}
	}
}

// The kube-scheduler image is the version the local control plane builds
// and the end-to-end tests prove the configuration against.
func TestKubeSchedulerImageMatchesTheTestedVersion(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root(), "..", "test", "tools", "k8s", "go.mod"))
	if err != nil {
		t.Skipf("the control plane's tools module is not here: %v", err)
	}
	m := regexp.MustCompile(`(?m)^\s*k8s\.io/kubernetes (v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("test/tools/k8s/go.mod does not require k8s.io/kubernetes")
	}
	if got, want := baseImages(t)["kube-scheduler"], "registry.k8s.io/kube-scheduler:"+string(m[1]); got != want {
		t.Errorf("kube-scheduler image is %s, the tested version is %s", got, want)
	}
}

// Nothing runs privileged or shares the host's namespaces; every container
// drops all its capabilities and cannot gain more.
func TestNoPrivilegedContainers(t *testing.T) {
	for _, w := range workloads(render(t, "overlays/binpack")) {
		// The monitor alone needs the host's pids: NVML lists only the
		// processes of the caller's pid namespace on current drivers.
		if w.spec.HostNetwork || w.spec.HostIPC || (w.spec.HostPID && w.name != "DaemonSet vgpu-monitor") {
			t.Errorf("%s shares a host namespace", w.name)
		}
		for _, c := range slices.Concat(w.spec.InitContainers, w.spec.Containers) {
			sc := c.SecurityContext
			where := w.name + " container " + c.Name
			if sc == nil {
				t.Errorf("%s has no securityContext", where)
				continue
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Errorf("%s is privileged", where)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s allows privilege escalation", where)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s has a writable root filesystem", where)
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("%s does not drop ALL capabilities", where)
			} else if len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s adds capabilities %v", where, sc.Capabilities.Add)
			}
		}
	}
}

func hostPaths(spec corev1.PodSpec, container string) map[string]string {
	vols := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			vols[v.Name] = v.HostPath.Path
		}
	}
	out := map[string]string{}
	for _, c := range spec.Containers {
		if c.Name != container {
			continue
		}
		for _, m := range c.VolumeMounts {
			if hp, ok := vols[m.Name]; ok {
				out[hp] = m.MountPath
				if hp == "/proc" && !m.ReadOnly {
					out[hp] += " (writable)"
				}
			}
		}
	}
	return out
}

// The node agents run on the labelled GPU nodes only, and see exactly the
// host directories of the container contract (lib/contract) at the same
// paths as on the host (and the monitor the host's /proc, read-only).
func TestNodeAgents(t *testing.T) {
	objs := render(t, "overlays/binpack")
	for _, tc := range []struct {
		daemonSet, container string
		hostPaths            map[string]string
	}{
		{"vgpu-device-plugin", "device-plugin", map[string]string{
			"/var/lib/kubelet/device-plugins": "/var/lib/kubelet/device-plugins",
			contract.HostRoot:                 contract.HostRoot,
		}},
		{"vgpu-monitor", "monitor", map[string]string{
			contract.HostContainersDir: contract.HostContainersDir,
			"/proc":                    "/host/proc",
		}},
	} {
		ds := find[*appsv1.DaemonSet](t, objs, tc.daemonSet)
		if got := ds.Spec.Template.Spec.NodeSelector; len(got) != 1 || got[contract.LabelGPUNode] != "true" {
			t.Errorf("DaemonSet %s nodeSelector = %v, want %s=true", ds.Name, got, contract.LabelGPUNode)
		}
		got := hostPaths(ds.Spec.Template.Spec, tc.container)
		if len(got) != len(tc.hostPaths) {
			t.Errorf("DaemonSet %s mounts host paths %v, want %v", ds.Name, got, tc.hostPaths)
		}
		for hp, mp := range tc.hostPaths {
			if got[hp] != mp {
				t.Errorf("DaemonSet %s mounts host %s at %q, want %s", ds.Name, hp, got[hp], mp)
			}
		}
		c := ds.Spec.Template.Spec.Containers[0]
		hasNode := false
		for _, e := range c.Env {
			if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
				hasNode = true
			}
		}
		if !hasNode {
			t.Errorf("DaemonSet %s does not tell its container the node name (NODE_NAME)", ds.Name)
		}
	}
}

// Every port a container serves is probed, on a port it declares, and the
// port it is told to listen on is the port it declares.
func TestProbesUseDeclaredPorts(t *testing.T) {
	for _, w := range workloads(render(t, "overlays/binpack")) {
		for _, c := range w.spec.Containers {
			where := w.name + " container " + c.Name
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			if len(ports) == 0 {
				continue
			}
			for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil {
					t.Errorf("%s has no HTTP %s probe", where, kind)
					continue
				}
				if _, ok := ports[p.HTTPGet.Port.String()]; !ok {
					t.Errorf("%s: %s probe on port %s, which it does not declare", where, kind, p.HTTPGet.Port.String())
				}
			}
		}
	}
}

// The two Deployments every vgpu pod depends on keep a replica through
// voluntary disruptions (node drains): their PodDisruptionBudgets select
// their pods and allow one to go.
func TestDeploymentsHaveDisruptionBudgets(t *testing.T) {
	objs := render(t, "overlays/binpack")
	for _, d := range all[*appsv1.Deployment](objs) {
		pdb := find[*policyv1.PodDisruptionBudget](t, objs, d.Name)
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("PodDisruptionBudget %s does not select the pods of Deployment %s", pdb.Name, d.Name)
		}
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 || int32(pdb.Spec.MinAvailable.IntValue()) >= *d.Spec.Replicas {
			t.Errorf("PodDisruptionBudget %s minAvailable %v with %d replicas: want at least 1 and a disruption allowed", pdb.Name, pdb.Spec.MinAvailable, *d.Spec.Replicas)
		}
	}
}
