package placement

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestHostBook: a node's free CPU and memory is its allocatable less the
// requests of the pods running on it; finished pods and pods on other
// nodes do not count.
func TestHostBook(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("16Gi")}}}
	pod := func(node string, phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("1Gi")}}}}},
			Status: corev1.PodStatus{Phase: phase}}
	}
	got := HostBook([]*corev1.Node{node}, []*corev1.Pod{pod("a", corev1.PodRunning), pod("a", corev1.PodPending),
		pod("a", corev1.PodSucceeded), pod("b", corev1.PodRunning)})
	if want := (HostFree{CPUMilli: 5000, MemoryMiB: 14 << 10, Known: true}); got["a"] != want || len(got) != 1 {
		t.Errorf("HostBook = %+v, want only a: %+v", got, want)
	}
}
