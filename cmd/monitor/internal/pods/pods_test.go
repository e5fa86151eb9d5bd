package pods

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

func pod(name string, phase corev1.PodPhase, ann string) *corev1.Pod {
	p := testutil.Pod(name, testutil.Node("n1"), testutil.Phase(phase))
	if ann != "" {
		p.Annotations = map[string]string{contract.AnnotationAssignment: ann}
	}
	return p
}

func TestNodeView(t *testing.T) {
	a, _ := annotation.EncodeAssignment(assign.Pod{Node: "n1", Containers: []assign.Container{{Name: "c", Devices: []assign.Device{{UUID: "GPU-1", MemoryMiB: 100}}}}})
	inv, _ := annotation.EncodeDevices(device.Inventory{SplitCount: 4, MemoryScaling: 1, GPUs: []device.GPU{{UUID: "GPU-1", MemoryMiB: 1000, Healthy: true}}})
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: map[string]string{contract.AnnotationDevices: inv}}},
		pod("running", corev1.PodRunning, a),
		pod("pending", corev1.PodPending, a),
		pod("done", corev1.PodSucceeded, a),
		pod("failed", corev1.PodFailed, a),
		pod("plain", corev1.PodRunning, ""),
		pod("broken", corev1.PodRunning, `{"version":"v1","node":""}`),
	)
	core, logs := observer.New(zap.WarnLevel)
	n := New(client, "n1", zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := n.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !n.Synced() {
		t.Fatal("not synced after Run")
	}
	if ref, ok := n.Lookup("uid-plain"); !ok || ref.Name != "plain" || ref.Namespace != "ns" {
		t.Fatalf("Lookup(uid-plain) = %+v, %v", ref, ok)
	}
	if _, ok := n.Lookup("uid-nope"); ok {
		t.Fatal("found a pod that does not exist")
	}
	for i := 0; i < 3; i++ {
		as := n.Assignments()
		if len(as) != 2 || as[0].Name != "pending" || as[1].Name != "running" {
			t.Fatalf("Assignments = %+v, want the pending and running pods only", as)
		}
	}
	if logs.Len() != 1 {
		t.Fatalf("3 reads logged the broken assignment %d times, want once", logs.Len())
	}
	if got, ok := n.Inventory(); !ok || got.SplitCount != 4 {
		t.Fatalf("Inventory = %+v, %v", got, ok)
	}
}
