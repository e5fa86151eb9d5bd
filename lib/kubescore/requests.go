package kubescore

import (
	"strings"

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
// the sidecars before it; the pod-level requests (spec.resources) in place
// of that for CPU, memory and huge pages; plus the pod's overhead. nonZero
// counts the defaults for a container that names no CPU or memory request
// (scoring's view), unless the pod level names it; otherwise requests are
// as written (filtering's and BalancedAllocation's).
func podRequests(pod *corev1.Pod, nonZero bool) resources {
	written := aggregate(pod, nil)
	if !nonZero {
		return written
	}
	defaults := resources{corev1.ResourceCPU: DefaultMilliCPURequest, corev1.ResourceMemory: DefaultMemoryRequest}
	if len(podLevel(pod.Spec.Resources)) > 0 {
		// With pod-level requests a default fills only what neither
		// level (nor the overhead) names.
		for r := range defaults {
			if _, ok := written[r]; ok {
				delete(defaults, r)
			}
		}
	}
	return aggregate(pod, defaults)
}

// HostRequests is what the pod asks of a node's CPU (millicores) and
// memory (MiB) as kube-scheduler's NodeResourcesFit filter counts it:
// requests as written, sidecars, init containers, pod-level requests,
// resizes and overhead included. The extender, the simulator and the
// what-if book hosts with it, so that they count as this model filters.
func HostRequests(pod *corev1.Pod) (cpuMilli, memMiB int64) {
	r := podRequests(pod, false)
	return r[corev1.ResourceCPU], r[corev1.ResourceMemory] >> 20
}

// aggregate sums the pod's requests as kube-scheduler does, each container
// that names none of a resource in defaults counting the default. For a
// pod the kubelet runs, each amount is the largest of the spec's, the
// kubelet's allocation and what it actuated (in-place resize, GA in 1.35);
// of the latter two only while a resize is infeasible.
func aggregate(pod *corev1.Pod, defaults resources) resources {
	infeasible := resizeInfeasible(pod)
	spec := func(c *corev1.Container, _ *corev1.ContainerStatus) corev1.ResourceList { return c.Resources.Requests }
	allocated := func(c *corev1.Container, cs *corev1.ContainerStatus) corev1.ResourceList {
		switch {
		case cs != nil && cs.AllocatedResources != nil:
			return cs.AllocatedResources
		case infeasible:
			return nil
		}
		return c.Resources.Requests
	}
	actuated := func(c *corev1.Container, cs *corev1.ContainerStatus) corev1.ResourceList {
		if cs != nil && cs.Resources != nil && cs.Resources.Requests != nil {
			return cs.Resources.Requests
		}
		return allocated(c, cs)
	}
	sum := resources{}
	if !infeasible {
		sum.max(containerSum(pod, defaults, spec))
	}
	if st := pod.Status; st.AllocatedResources != nil && st.Resources != nil && st.Resources.Requests != nil {
		// The kubelet's pod-level record already sums the containers.
		sum.max(amounts(st.AllocatedResources))
		sum.max(amounts(st.Resources.Requests))
	} else {
		sum.max(containerSum(pod, defaults, allocated))
		sum.max(containerSum(pod, defaults, actuated))
	}
	if level := podLevel(pod.Spec.Resources); len(level) > 0 {
		if infeasible {
			level = resources{}
		}
		if pod.Status.Resources != nil {
			level.max(podLevel(pod.Status.Resources))
			level.max(podLevel(&corev1.ResourceRequirements{Requests: pod.Status.AllocatedResources}))
		}
		for name, v := range level {
			sum[name] = v
		}
	}
	sum.add(amounts(pod.Spec.Overhead))
	return sum
}

// containerSum is one view of the containers' requests, summed with the
// sidecar rule: app containers and sidecars add up, an init container
// runs beside the sidecars before it.
func containerSum(pod *corev1.Pod, defaults resources, view func(*corev1.Container, *corev1.ContainerStatus) corev1.ResourceList) resources {
	ctr := func(c *corev1.Container) resources {
		list := view(c, containerStatus(pod, c.Name))
		r := amounts(list)
		for name, v := range defaults {
			if _, ok := list[name]; !ok {
				r[name] = v
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
	return sum
}

func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// resizeInfeasible: the kubelet said the pod's resize cannot be done.
func resizeInfeasible(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodResizePending {
			return c.Reason == corev1.PodReasonInfeasible
		}
	}
	return false
}

// podLevel is what of pod-level requests kube-scheduler honours: CPU,
// memory and huge pages.
func podLevel(r *corev1.ResourceRequirements) resources {
	out := resources{}
	if r == nil {
		return out
	}
	for name, v := range amounts(r.Requests) {
		if name == corev1.ResourceCPU || name == corev1.ResourceMemory || strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix) {
			out[name] = v
		}
	}
	return out
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
