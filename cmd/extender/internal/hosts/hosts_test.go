package hosts

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	vtest "github.com/vgpu-io/vgpu/internal/testutil"
)

func node(name, cpu, mem string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}}
}

func pod(name, nodeName, cpu, mem string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

// TestFreeFollowsThePods: a node's free CPU and memory are its allocatable
// less what its bound, unfinished pods request, whoever scheduled them.
func TestFreeFollowsThePods(t *testing.T) {
	cs := fake.NewClientset(node("n", "16", "64Gi"), pod("a", "n", "4", "8Gi"), pod("pending", "", "8", "1Gi"))
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
	bound := pod("pending", "n", "8", "1Gi")
	if _, err := pods.Update(ctx, bound, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a bound pod counted", func() bool { return h.Free("n").CPUMilli == 4000 })
	done := pod("a", "n", "4", "8Gi")
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
