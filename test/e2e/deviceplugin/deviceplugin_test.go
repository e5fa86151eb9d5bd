// Package deviceplugin tests the device plugin against a local control
// plane: in mock-NVML mode for a kwok node, its inventory reaches the Node,
// the extender schedules onto it, and a settings change is re-advertised.
package deviceplugin

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/gpunode"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

func TestMockNodeInventoryIsScheduledOn(t *testing.T) {
	c := cluster.Run(t, cluster.Options{NoScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	s := settings.Default()
	s.DeviceSplitCount = 5
	if err := daemons.SetSettings(ctx, c, s); err != nil {
		t.Fatal(err)
	}
	// A kwok node with neither inventory nor GPU capacity: both must come
	// from the plugin.
	node, err := gpunode.Node(gpunode.Spec{Prefix: "dp-node", GPUs: 1, NoInventory: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	delete(node.Status.Capacity, contract.ResourceGPU)
	delete(node.Status.Allocatable, contract.ResourceGPU)
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitForNodesReady(ctx, node.Name); err != nil {
		t.Fatal(err)
	}

	if err := daemons.StartNodeAgent(ctx, c, node.Name, "mock:dgxa100:4"); err != nil {
		t.Fatal(err)
	}
	inv := waitInventory(ctx, t, c, node.Name, func(inv device.Inventory, gpus int64) bool {
		return len(inv.GPUs) == 4 && inv.SplitCount == 5 && gpus == 20
	})
	for _, g := range inv.GPUs {
		if g.Model != gpus.A100_SXM4_40GB.Name || g.MemoryMiB != 40960 || !g.Healthy {
			t.Fatalf("inventory GPU %+v: want a healthy %s with 40960 MiB", g, gpus.A100_SXM4_40GB.Name)
		}
	}

	ext, err := daemons.StartExtender(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := daemons.SchedulerConfig(ext.URL)
	if err != nil {
		t.Fatal(err)
	}
	c.SetSchedulerConfig(cfg)
	if err := c.StartScheduler(ctx); err != nil {
		t.Fatal(err)
	}
	const ns = "e2e-deviceplugin"
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	pod := testutil.Pod("share", testutil.Namespace(ns), testutil.Labels(map[string]string{"app": "dp"}), testutil.Scheduler(contract.DefaultSchedulerName),
		testutil.Container("cuda", contract.ResourceGPU, "1", contract.ResourceMemory, "10000"))
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running, err := c.WaitForPods(ctx, ns, "app=dp", 1, cluster.PodRunning)
	if err != nil {
		t.Fatal(err)
	}
	got := running[0]
	a, err := annotation.DecodeAssignment(got.Annotations[contract.AnnotationAssignment])
	if err != nil {
		t.Fatalf("pod %s: %v", got.Name, err)
	}
	if got.Spec.NodeName != node.Name || a.Node != node.Name || len(a.Containers) != 1 || len(a.Containers[0].Devices) != 1 {
		t.Fatalf("pod on %s with assignment %+v: want one GPU of %s", got.Spec.NodeName, a, node.Name)
	}
	d := a.Containers[0].Devices[0]
	if !slices.ContainsFunc(inv.GPUs, func(g device.GPU) bool { return g.UUID == d.UUID }) || d.MemoryMiB != 10000 {
		t.Fatalf("assigned %+v: want 10000 MiB on one of the plugin's GPUs", d)
	}

	// A settings change reaches the Node without restarting the plugin.
	s.DeviceSplitCount = 10
	if err := daemons.SetSettings(ctx, c, s); err != nil {
		t.Fatal(err)
	}
	waitInventory(ctx, t, c, node.Name, func(inv device.Inventory, gpus int64) bool {
		return inv.SplitCount == 10 && gpus == 40
	})
}

// waitInventory waits until the Node's inventory and allocatable GPUs
// satisfy ok, and returns the inventory.
func waitInventory(ctx context.Context, t *testing.T, c *cluster.Cluster, name string, ok func(device.Inventory, int64) bool) device.Inventory {
	t.Helper()
	var last string
	for {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = n.Annotations[contract.AnnotationDevices]
			q := n.Status.Allocatable[contract.ResourceGPU]
			if inv, err := annotation.DecodeDevices(last); err == nil && ok(inv, q.Value()) {
				return inv
			}
			last += " allocatable=" + q.String()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %s: inventory not as expected: %s", name, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
