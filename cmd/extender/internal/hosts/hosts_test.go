package hosts

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	vtest "github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/kubescore"
)

func node(name, cpu, mem string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}}
}

// TestFreeFollowsThePods: a node's free CPU and memory are its allocatable
// less what its bound, unfinished pods request, whoever scheduled them.
func TestFreeFollowsThePods(t *testing.T) {
	running := vtest.Phase(corev1.PodRunning)
	a := vtest.Pod("a", vtest.Node("n"), running, vtest.Container("c"), vtest.Requests("c", "cpu", "4", "memory", "8Gi"))
	pending := vtest.Pod("pending", running, vtest.Container("c"), vtest.Requests("c", "cpu", "8", "memory", "1Gi"))
	cs := fake.NewClientset(node("n", "16", "64Gi"), a, pending)
	h, err := New(cs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.Start(ctx.Done())
	eventually(t, "synced", h.HasSynced)
	if f := h.Free("n"); !f.Known || f.CPUMilli != 12000 || f.MemoryMiB != 56*1024 {
		t.Fatalf("free %+v, want 12000 milli and 57344 MiB", f)
	}
	if f := h.Free("other"); f.Known {
		t.Fatalf("an unknown node reads as known: %+v", f)
	}
	pods := cs.CoreV1().Pods("ns")
	bound := pending.DeepCopy()
	bound.Spec.NodeName = "n"
	if _, err := pods.Update(ctx, bound, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a bound pod counted", func() bool { return h.Free("n").CPUMilli == 4000 })
	done := a.DeepCopy()
	done.Status.Phase = corev1.PodSucceeded
	if _, err := pods.Update(ctx, done, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a finished pod released", func() bool { return h.Free("n").CPUMilli == 8000 })
	if err := pods.Delete(ctx, "pending", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a deleted pod released", func() bool { f := h.Free("n"); return f.CPUMilli == 16000 && f.MemoryMiB == 64*1024 })
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	vtest.Eventually(t, 5*time.Second, what, cond)
}

// TestStripKeepsWhatHostRequestsReads: the stripped pod the books keep
// counts as the pod does: sidecars (restart policy), overhead, pod-level
// requests and a resize the kubelet allocated included.
func TestStripKeepsWhatHostRequestsReads(t *testing.T) {
	p := vtest.Pod("p", vtest.Namespace("ns"), vtest.Node("n"),
		vtest.Sidecar("side"), vtest.Requests("side", "cpu", "1"),
		vtest.Container("app"), vtest.Requests("app", "cpu", "2"),
		vtest.Overhead("cpu", "500m"))
	check := func(what string, wantCPU int64) {
		t.Helper()
		got, err := stripPod(p)
		if err != nil {
			t.Fatal(err)
		}
		podCPU, _ := kubescore.HostRequests(p)
		if gotCPU, _ := kubescore.HostRequests(got.(*corev1.Pod)); gotCPU != podCPU || podCPU != wantCPU {
			t.Errorf("%s: stripped pod counts %dm CPU, the pod %dm: want both %dm", what, gotCPU, podCPU, wantCPU)
		}
	}
	check("sidecar and overhead", 3500)
	// The kubelet allocated a resize of app to 4 CPUs.
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", AllocatedResources: vtest.Limits("cpu", "4")}}
	check("resized", 5500)
	p.Spec.Resources = &corev1.ResourceRequirements{Requests: vtest.Limits("cpu", "10")}
	p.Status.ContainerStatuses = nil
	check("pod-level requests", 10500)
}
