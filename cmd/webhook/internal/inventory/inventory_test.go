package inventory

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
)

func node(t *testing.T, name string, scaling float64, mems ...int64) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"big": "label"}}}
	if len(mems) == 0 {
		return n
	}
	inv := device.Inventory{SplitCount: 10, MemoryScaling: scaling}
	for i, m := range mems {
		inv.GPUs = append(inv.GPUs, device.GPU{UUID: name + "-gpu" + string(rune('0'+i)), Index: i, Model: "A100", MemoryMiB: m, Healthy: i != 1})
	}
	v, err := annotation.EncodeDevices(inv)
	if err != nil {
		t.Fatal(err)
	}
	n.Annotations = map[string]string{contract.AnnotationDevices: v}
	return n
}

func TestLargestFollowsNodes(t *testing.T) {
	cs := fake.NewClientset(node(t, "a", 1, 40960, 81920), node(t, "cpu-only", 1))
	f := informers.NewSharedInformerFactory(cs, 0)
	l, err := New(f, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())

	expect := func(want int64, ok bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, gotOK := l.LargestGPU()
			if got == want && gotOK == ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("LargestGPU = %d,%v; want %d,%v", got, gotOK, want, ok)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The unhealthy 80 GiB GPU of node a still counts.
	expect(81920, true)
	nodes := cs.CoreV1().Nodes()
	if _, err := nodes.Create(ctx, node(t, "b", 2, 65536), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(131072, true) // memory scaling 2 doubles what the scheduler hands out
	if _, err := nodes.Update(ctx, node(t, "b", 1, 16384), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(81920, true)
	if err := nodes.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(16384, true)
	if err := nodes.Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(0, false)
}

func TestStripNodeKeepsOnlyInventory(t *testing.T) {
	n := node(t, "a", 1, 1000)
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"x"}}}
	out, err := stripNode(n)
	if err != nil {
		t.Fatal(err)
	}
	s := out.(*corev1.Node)
	if s.Name != "a" || s.Labels != nil || len(s.Status.Images) != 0 || s.Annotations[contract.AnnotationDevices] == "" {
		t.Fatalf("stripped node %+v", s)
	}
}
