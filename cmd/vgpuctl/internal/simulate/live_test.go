package simulate

import (
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
)

func liveNode(t *testing.T, name string) *corev1.Node {
	t.Helper()
	inv := device.Inventory{SplitCount: 4, MemoryScaling: 1}
	for i := 0; i < 2; i++ {
		inv.GPUs = append(inv.GPUs, device.GPU{UUID: name + "-g" + string(rune('0'+i)), Index: i, Model: "A100", MemoryMiB: 40960, NUMANode: -1, Healthy: true})
	}
	raw, err := annotation.EncodeDevices(inv)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{contract.AnnotationDevices: raw}},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("128Gi")}}}
}

// TestWhatIf: node a runs a pod holding GPU a-g0 whole; a new whole-GPU
// pod lands on a's other GPU under binpack and on the empty node b under
// spread; a 3-GPU pod stays pending everywhere (2 GPUs a node); running
// pods on nodes without a vGPU inventory are not counted.
func TestWhatIf(t *testing.T) {
	run := testutil.Pod("run", testutil.Phase(corev1.PodRunning), testutil.Container("c"),
		testutil.Assigned(assign.Pod{Node: "a", Containers: []assign.Container{{Name: "c", Devices: []assign.Device{{UUID: "a-g0", MemoryMiB: 40960, Cores: 100}}}}}))
	cs := fake.NewClientset(liveNode(t, "a"), liveNode(t, "b"), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}, run)
	old := newClient
	newClient = func(string, string) (kubernetes.Interface, error) { return cs, nil }
	defer func() { newClient = old }()
	workload := writeTemp(t, `apiVersion: v1
kind: Pod
metadata: {name: one}
spec:
  containers:
  - name: c
    resources: {limits: {nvidia.com/gpu: "1"}}
---
apiVersion: v1
kind: Pod
metadata: {name: three}
spec:
  containers:
  - name: c
    resources: {limits: {nvidia.com/gpu: "3"}}
`)
	out := runCommand(t, "--kubeconfig", "x", "--workload", workload, "--policy", "all")
	if !strings.Contains(out, "2 nodes with vGPUs, 4 GPUs, 1 running pods") {
		t.Fatalf("cluster summary wrong:\n%s", out)
	}
	one := regexp.MustCompile(`(?m)^one\s+(\S+ \S+)\s+(\S+ \S+)\s+(\S+ \S+)`).FindStringSubmatch(out)
	if one == nil || one[1] != "a [a-g1]" || one[3] != "b [b-g0]" {
		t.Fatalf("pod one: want a [a-g1] under binpack/binpack and b [b-g0] under spread/binpack:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^three(\s+pending){6}`).MatchString(out) {
		t.Fatalf("pod three must stay pending under every policy:\n%s", out)
	}
}
