package main

import (
	"context"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	schedv1 "k8s.io/kube-scheduler/config/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

// A mode is one way of scheduling the same workload: which nodes the
// cluster has, how the scheduler is configured and what each pod asks for.
// Each mode runs on a fresh cluster of the same size; the benchmark prints
// every mode it ran and each one's throughput relative to the first.
type mode struct {
	name string
	// node is the shape of every simulated node (Count/Start are set by the
	// benchmark).
	node gpunode.Spec
	// setup runs once the cluster is up and the nodes are Ready, before
	// pods are created, and returns the scheduler configuration to start
	// with (nil: stock defaults). It may start extra components on c.
	setup func(ctx context.Context, c *cluster.Cluster) (*schedv1.KubeSchedulerConfiguration, error)
	// pod is the i-th benchmark pod.
	pod func(i int) *corev1.Pod
	// before, if set, runs before the i-th pod is created (objects the pod
	// refers to, such as its ResourceClaim).
	before func(ctx context.Context, client kubernetes.Interface, i int) error
	// stats, if set, runs once every pod is bound, before the cluster
	// stops, and returns lines for the report (a component's own timings).
	stats func(ctx context.Context) (string, error)
	// pprof, if set, names the mode's own components that serve
	// /debug/pprof/, by base URL (for --profile).
	pprof func() map[string]string
}

// modes is the registry; a file per extra mode adds itself in init.
var modes = map[string]mode{}

func register(m mode) {
	if _, dup := modes[m.name]; dup {
		panic("bench-scheduling: mode " + m.name + " registered twice")
	}
	modes[m.name] = m
}

func modeNames() []string {
	var out []string
	for n := range modes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func init() {
	// stock: the default kube-scheduler counting whole GPUs through the
	// extended resource, one physical GPU per nvidia.com/gpu.
	register(mode{
		name: "stock",
		node: gpunode.Spec{Model: gpunode.A100_80GB, SplitCount: 1},
		setup: func(context.Context, *cluster.Cluster) (*schedv1.KubeSchedulerConfiguration, error) {
			return nil, nil
		},
		pod: func(i int) *corev1.Pod {
			return benchPod(i, corev1.ResourceList{contract.ResourceGPU: resource.MustParse("1")})
		},
	})
}

// benchPod is a pod of one container with limits, labelled for the watch.
func benchPod(i int, limits corev1.ResourceList) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:   fmt.Sprintf("bench-%05d", i),
			Labels: map[string]string{"app": "bench-scheduling"},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:      "work",
				Image:     "nvidia/cuda:12.4.0-base-ubuntu22.04",
				Resources: corev1.ResourceRequirements{Limits: limits},
			}},
			// Nothing in this cluster mounts the token; skipping it keeps
			// the pods the same across modes.
			AutomountServiceAccountToken: new(bool),
		},
	}
}
