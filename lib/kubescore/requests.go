package kubescore

import (
	corev1 "k8s.io/api/core/v1"
)

// resources are amounts by resource name: CPU in millicores, everything
// else in units (bytes for memory).
type resources map[corev1.ResourceName]int64

func (r resources) add(o resources) {
	for k, v := range o {
		r[k] += v
	}
}

func (r resources) max(o resources) {
	for k, v := range o {
		r[k] = max(r[k], v)
	}
}

// DefaultMilliCPURequest and DefaultMemoryRequest are what kube-scheduler's
// scoring counts for a container that names no CPU or memory request, so
// that pods without requests still spread (pkg/scheduler/util).
const (
	DefaultMilliCPURequest = 100
	DefaultMemoryRequest   = 200 * 1024 * 1024
)

// podRequests is what kube-scheduler counts a pod as requesting: its
// containers' requests summed, restartable init containers (sidecars)
// included, at least the largest init container's while it runs beside
// the sidecars before it, plus the pod's overhead. nonZero counts the
// defaults for a container that names no CPU or memory request (scoring's
// view); otherwise requests are as written (filtering's and
// BalancedAllocation's).
func podRequests(pod *corev1.Pod, nonZero bool) resources {
	ctr := func(c *corev1.Container) resources {
		r := amounts(c.Resources.Requests)
		if nonZero {
			if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
				r[corev1.ResourceCPU] = DefaultMilliCPURequest
			}
			if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
				r[corev1.ResourceMemory] = DefaultMemoryRequest
			}
		}
		return r
	}
	sum := resources{}
	for i := range pod.Spec.Containers {
		sum.add(ctr(&pod.Spec.Containers[i]))
	}
	sidecars, init := resources{}, resources{}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		r := ctr(c)
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sum.add(r)
			sidecars.add(r)
			init.max(sidecars)
			continue
		}
		r.add(sidecars)
		init.max(r)
	}
	sum.max(init)
	sum.add(amounts(pod.Spec.Overhead))
	return sum
}

// allocatable is the node's allocatable in the same units.
func allocatable(n *corev1.Node) resources {
	return amounts(n.Status.Allocatable)
}

func amounts(l corev1.ResourceList) resources {
	r := resources{}
	for k, q := range l {
		if k == corev1.ResourceCPU {
			r[k] = q.MilliValue()
		} else {
			r[k] = q.Value()
		}
	}
	return r
}
