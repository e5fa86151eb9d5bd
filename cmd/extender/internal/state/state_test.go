package state

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	vtest "github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
)

func node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	raw, err := annotation.EncodeDevices(device.Inventory{SplitCount: 10, MemoryScaling: 1,
		GPUs: []device.GPU{{UUID: name + "-g0", Model: "A100", MemoryMiB: 81920, Healthy: true}}})
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{contract.AnnotationDevices: raw}},
		Status: corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"big"}}}}}
}

// assigned is a running pod of the vgpu scheduler holding mem MiB of
// nodeName's GPU.
func assigned(name, nodeName string, mem int64) *corev1.Pod {
	return vtest.Pod(name, vtest.Scheduler(contract.DefaultSchedulerName), vtest.Phase(corev1.PodRunning), vtest.Container("c"),
		vtest.Assigned(assign.Pod{Node: nodeName, Containers: []assign.Container{{Name: "c", Devices: []assign.Device{{UUID: nodeName + "-g0", MemoryMiB: mem, Cores: 10}}}}}))
}

func used(s *State, nodeName string) int64 {
	st := s.Ledger.State(nodeName)
	if len(st) == 0 {
		return -1
	}
	return st[0].Used.MemoryMiB
}

// started runs a State on cs until ctx ends, once it has synced.
func started(ctx context.Context, t *testing.T, cs *fake.Clientset, hooks Hooks) *State {
	t.Helper()
	s, err := New(cs, contract.DefaultSchedulerName, zap.NewNop(), hooks)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(ctx.Done())
	eventually(t, "synced", s.HasSynced)
	return s
}

func TestLedgerFollowsTheAPI(t *testing.T) {
	cs := fake.NewClientset(node(t, "n1"), assigned("a", "n1", 1000), assigned("b", "n1", 2000))
	var freed atomic.Int64
	var settled atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := started(ctx, t, cs, Hooks{Freed: func() { freed.Add(1) }, Settled: func(types.UID) { settled.Add(1) }})
	// Rebuilt from the existing assignments at start.
	if got := used(s, "n1"); got != 3000 {
		t.Fatalf("after the first list the ledger holds %d MiB, want 3000", got)
	}
	if p, ok := s.Pod("ns", "a"); !ok || p.Annotations[contract.AnnotationAssignment] == "" {
		t.Fatal("the pod cache lacks pod a or its assignment")
	}

	pods := cs.CoreV1().Pods("ns")
	// A pod that finishes releases its GPUs.
	b := assigned("b", "n1", 2000)
	b.Status.Phase = corev1.PodSucceeded
	if _, err := pods.Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a Succeeded pod released", func() bool { return used(s, "n1") == 1000 })

	// A pod that loses its annotation keeps its GPUs (only the bind that
	// wrote it may undo it).
	a := assigned("a", "n1", 1000)
	delete(a.Annotations, contract.AnnotationAssignment)
	if _, err := pods.Update(ctx, a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := used(s, "n1"); got != 1000 {
		t.Fatalf("an update without the annotation changed the books to %d MiB", got)
	}
	// A deleted pod releases its GPUs.
	if err := pods.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a deleted pod released", func() bool { return used(s, "n1") == 0 })
	if freed.Load() < 2 || settled.Load() < 2 {
		t.Errorf("hooks: freed %d, settled %d; want each release and each end reported", freed.Load(), settled.Load())
	}

	// A bind in flight: views older than its patch are ignored.
	s.Expect("uid-c", "something-else")
	if _, err := pods.Create(ctx, assigned("c", "n1", 5000), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := used(s, "n1"); got != 0 {
		t.Fatalf("a view the bind did not write was booked: %d MiB", got)
	}

	// Node inventory changes reach the ledger; heartbeats do not count.
	if err := cs.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a deleted node forgotten", func() bool { return len(s.Ledger.NodeNames()) == 0 })
	if _, err := cs.CoreV1().Nodes().Create(ctx, node(t, "n2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a new node known", func() bool { return len(s.Ledger.NodeNames()) == 1 })
}

func TestStrippedObjectsKeepWhatSchedulingReads(t *testing.T) {
	p := assigned("a", "n1", 1000)
	p.Annotations[contract.AnnotationUseGPUType] = "A100"
	p.Annotations["unrelated"] = "x"
	yes := true
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes, RunAsUser: new(int64)}
	p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", Value: "y"}}
	out, _ := stripPod(p)
	sp := out.(*corev1.Pod)
	if sp.Annotations["unrelated"] != "" || sp.Annotations[contract.AnnotationUseGPUType] != "A100" || sp.Annotations[contract.AnnotationAssignment] == "" {
		t.Errorf("annotations %v", sp.Annotations)
	}
	c := sp.Spec.Containers[0]
	if c.Env != nil || c.SecurityContext.RunAsUser != nil || !*c.SecurityContext.Privileged || sp.UID != p.UID || sp.Spec.NodeName != "n1" || sp.Status.Phase != corev1.PodRunning {
		t.Errorf("stripped pod %+v", sp)
	}
	n, _ := stripNode(node(t, "n"))
	if sn := n.(*corev1.Node); len(sn.Status.Images) != 0 || sn.Annotations[contract.AnnotationDevices] == "" {
		t.Errorf("stripped node %+v", sn)
	}
}

// TestMixRebuiltFromPods: after a restart the learned mix holds the pods
// that exist (GPU and CPU-only), and a new pod counts once, not per update.
func TestMixRebuiltFromPods(t *testing.T) {
	share := func(name string) *corev1.Pod {
		return vtest.Pod(name, vtest.Scheduler(contract.DefaultSchedulerName), vtest.Container("c", contract.ResourceGPU, "1", contract.ResourceCores, "30"))
	}
	cpuOnly := vtest.Pod("cpu", vtest.Scheduler(contract.DefaultSchedulerName), vtest.Container("c"), vtest.Requests("c", "cpu", "2"))
	cs := fake.NewClientset(node(t, "n1"), share("a"), share("b"), cpuOnly)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := started(ctx, t, cs, Hooks{})
	if got := s.Mix.Seen(); got != 3 {
		t.Fatalf("the mix counted %d pods after the first list, want 3", got)
	}
	if s.Mix.Snapshot().Len() != 1 {
		t.Fatalf("the snapshot after sync holds %d shapes, want the one GPU shape", s.Mix.Snapshot().Len())
	}
	c := share("c")
	if _, err := cs.CoreV1().Pods("ns").Create(ctx, c, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a new pod counted", func() bool { return s.Mix.Seen() == 4 })
	c.Spec.NodeName = "n1"
	if _, err := cs.CoreV1().Pods("ns").Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := s.Mix.Seen(); got != 4 {
		t.Fatalf("an update counted the pod again: %d", got)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	vtest.Eventually(t, 5*time.Second, what, cond)
}
