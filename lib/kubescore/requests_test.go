package kubescore

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestHostRequests: the host booking counts a restartable init container
// (a sidecar) beside the app containers and beside every init container
// after it, adds the pod's overhead, and lets pod-level requests stand in
// for the containers' sum, as the resource filter does.
func TestHostRequests(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	rl := func(cpu, mem string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{
			{Name: "side", RestartPolicy: &always, Resources: rl("500m", "1Gi")},
			{Name: "init", Resources: rl("2", "1Gi")},
		},
		Containers: []corev1.Container{{Name: "app", Resources: rl("1", "4Gi")}},
		Overhead:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
	}}
	// CPU: init 2 + sidecar 0.5 = 2.5 beats app 1 + sidecar 0.5; memory:
	// app 4Gi + sidecar 1Gi beats init 1Gi + sidecar 1Gi; overhead on top.
	if cpu, mem := HostRequests(pod); cpu != 2750 || mem != 5*1024+128 {
		t.Errorf("HostRequests = %dm CPU, %d MiB; want 2750m, %d MiB", cpu, mem, 5*1024+128)
	}
	level := rl("8", "16Gi")
	pod.Spec.Resources = &level
	if cpu, mem := HostRequests(pod); cpu != 8250 || mem != 16*1024+128 {
		t.Errorf("with pod-level requests: HostRequests = %dm CPU, %d MiB; want 8250m, %d MiB", cpu, mem, 16*1024+128)
	}
}
