package state

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// podAnnotations are the annotations scheduling reads.
var podAnnotations = []string{
	contract.AnnotationAssignment,
	contract.AnnotationUseGPUType, contract.AnnotationNoUseGPUType,
	contract.AnnotationUseGPUUUID, contract.AnnotationNoUseGPUUUID,
	contract.AnnotationNodePolicy, contract.AnnotationGPUPolicy,
}

// stripPod keeps what the ledger and lib/request read of a pod, so that
// the cache of thousands of pods stays small.
func stripPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{
			NodeName: p.Spec.NodeName, SchedulerName: p.Spec.SchedulerName,
			InitContainers: stripContainers(p.Spec.InitContainers),
			Containers:     stripContainers(p.Spec.Containers),
		},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}
	for _, k := range podAnnotations {
		if v, ok := p.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	return out, nil
}

func stripContainers(cs []corev1.Container) []corev1.Container {
	if len(cs) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{Name: c.Name, Resources: c.Resources}
		if c.SecurityContext != nil && c.SecurityContext.Privileged != nil {
			out[i].SecurityContext = &corev1.SecurityContext{Privileged: c.SecurityContext.Privileged}
		}
	}
	return out
}

// stripNode keeps a Node's name and GPU inventory.
func stripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}
	if v, ok := n.Annotations[contract.AnnotationDevices]; ok {
		out.Annotations = map[string]string{contract.AnnotationDevices: v}
	}
	return out, nil
}
