package main

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	schedv1 "k8s.io/kube-scheduler/config/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

// dra: the vgpu workload on the DRA path (docs/dra.md). Every node has the
// ResourceSlice vgpu's node agent publishes in DRA mode, every pod the
// claim vgpu's webhook writes for the same limits, and the stock
// kube-scheduler allocates them, no extender. The claims are created with
// the pods (there is no kube-controller-manager to make them from
// templates); creating them is not part of the measured scheduling.
func init() {
	const model = gpunode.A100_80GB
	var models []dra.Model
	register(mode{
		name: "dra",
		node: gpunode.Spec{Model: model, SplitCount: 10, NoInventory: true},
		setup: func(ctx context.Context, c *cluster.Cluster) (*schedv1.KubeSchedulerConfiguration, error) {
			if _, err := c.Client.ResourceV1().DeviceClasses().Create(ctx, draClass(), metav1.CreateOptions{}); err != nil {
				return nil, err
			}
			nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, err
			}
			var mu sync.Mutex
			seen := map[dra.Model]bool{}
			return nil, parallel(ctx, len(nodes.Items), func(i int) error {
				n := nodes.Items[i]
				gpus := n.Status.Capacity[contract.ResourceGPU]
				list, err := gpunode.Discover(n.Name, model, int(gpus.Value()/10))
				if err != nil {
					return err
				}
				slice, err := draSlice(n.Name, list)
				if err != nil {
					return err
				}
				mu.Lock()
				for _, g := range list {
					if m := (dra.Model{Name: g.Model, MemoryMiB: g.MemoryMiB}); !seen[m] {
						seen[m] = true
						models = append(models, m)
					}
				}
				mu.Unlock()
				_, err = c.Client.ResourceV1().ResourceSlices().Create(ctx, slice, metav1.CreateOptions{})
				return err
			})
		},
		before: func(ctx context.Context, client kubernetes.Interface, i int) error {
			spec, err := draClaimSpec(i, models)
			if err != nil {
				return err
			}
			_, err = client.ResourceV1().ResourceClaims(namespace).Create(ctx, &resourcev1.ResourceClaim{
				ObjectMeta: metav1.ObjectMeta{Name: draClaim(i)}, Spec: spec}, metav1.CreateOptions{})
			return err
		},
		pod: func(i int) *corev1.Pod {
			p := benchPod(i, nil)
			name := draClaim(i)
			p.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimName: &name}}
			p.Spec.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: "gpu"}}
			return p
		},
	})
}

// draClass is vgpu's DeviceClass as the dra overlay installs it.
func draClass() *resourcev1.DeviceClass {
	return &resourcev1.DeviceClass{
		ObjectMeta: metav1.ObjectMeta{Name: dra.DeviceClass},
		Spec: resourcev1.DeviceClassSpec{Selectors: []resourcev1.DeviceSelector{{CEL: &resourcev1.CELDeviceSelector{
			Expression: fmt.Sprintf("device.driver == %q", dra.Driver)}}}},
	}
}

// draSlice is the ResourceSlice vgpu's node agent publishes for node's GPUs
// with the default settings.
func draSlice(node string, gpus []device.GPU) (*resourcev1.ResourceSlice, error) {
	devs, err := dra.Devices(gpus, settings.Default())
	if err != nil {
		return nil, err
	}
	return &resourcev1.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{Name: node + "-" + dra.Driver},
		Spec: resourcev1.ResourceSliceSpec{Driver: dra.Driver, NodeName: &node, Devices: devs,
			Pool: resourcev1.ResourcePool{Name: node, Generation: 1, ResourceSliceCount: 1}},
	}, nil
}

// draClaimSpec is the claim vgpu's webhook writes for the i-th vgpu pod.
func draClaimSpec(i int, models []dra.Model) (resourcev1.ResourceClaimSpec, error) {
	parsed, err := request.FromPod(vgpuPod(i))
	if err != nil {
		return resourcev1.ResourceClaimSpec{}, err
	}
	return dra.ClaimSpec(parsed.Containers[0], parsed.Selector, models)
}

func draClaim(i int) string { return fmt.Sprintf("bench-%05d", i) }

// parallel runs f for 0..n-1, 32 at a time, and returns the first error.
func parallel(ctx context.Context, n int, f func(i int) error) error {
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs <- f(i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}
