package binder

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/vgpu-io/vgpu/cmd/extender/internal/state"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/settings"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

func gpuNode(t *testing.T, name string, gpus int) *corev1.Node {
	t.Helper()
	inv := device.Inventory{SplitCount: 10, MemoryScaling: 1}
	for i := range gpus {
		inv.GPUs = append(inv.GPUs, device.GPU{UUID: name + "-gpu" + string(rune('0'+i)), Index: i, Model: "NVIDIA A100-SXM4-80GB", MemoryMiB: 81920, Healthy: true})
	}
	raw, err := annotation.EncodeDevices(inv)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{contract.AnnotationDevices: raw}}}
}

func pendingPod(name string, memMiB string) *corev1.Pod {
	return testutil.Pod(name, testutil.Scheduler(contract.DefaultSchedulerName),
		testutil.Container("work", contract.ResourceMemory, memMiB, contract.ResourceCores, "20"))
}

func setup(t *testing.T, objs ...runtime.Object) (*fake.Clientset, *state.State, *Binder) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	st, err := state.New(cs, contract.DefaultSchedulerName, zap.NewNop(), state.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st.Start(ctx.Done())
	deadline := time.Now().Add(5 * time.Second)
	for !st.HasSynced() {
		if time.Now().After(deadline) {
			t.Fatal("informers did not sync")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cs, st, &Binder{CS: cs, State: st, Settings: settings.Default, Log: zap.NewNop()}
}

func args(p *corev1.Pod, node string) *extenderv1.ExtenderBindingArgs {
	return &extenderv1.ExtenderBindingArgs{PodName: p.Name, PodNamespace: p.Namespace, PodUID: p.UID, Node: node}
}

// bindingsMade returns the Bindings the binder created.
func bindingsMade(cs *fake.Clientset) []*corev1.Binding {
	var out []*corev1.Binding
	for _, a := range cs.Actions() {
		if c, ok := a.(k8stesting.CreateAction); ok && a.GetSubresource() == "binding" {
			out = append(out, c.GetObject().(*corev1.Binding))
		}
	}
	return out
}

// applyBinding does what the API server does with a Binding: set the node
// and the Binding's annotations on the pod.
func applyBinding(t *testing.T, cs *fake.Clientset, bnd *corev1.Binding) {
	t.Helper()
	p, err := cs.CoreV1().Pods(bnd.Namespace).Get(context.Background(), bnd.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Spec.NodeName = bnd.Target.Name
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	for k, v := range bnd.Annotations {
		p.Annotations[k] = v
	}
	if _, err := cs.CoreV1().Pods(bnd.Namespace).Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestBindBooksAndBindsInOneWrite(t *testing.T) {
	pod := pendingPod("a", "30000")
	cs, st, b := setup(t, gpuNode(t, "n1", 2), pod)
	result, err := b.Bind(context.Background(), args(pod, "n1"))
	if err != nil || result != Bound {
		t.Fatalf("bind: %s %v", result, err)
	}
	if node, ok := st.Ledger.Holds(string(pod.UID)); !ok || node != "n1" {
		t.Fatalf("ledger holds the pod on %q (%v), want n1", node, ok)
	}
	made := bindingsMade(cs)
	if len(made) != 1 || countVerb(cs, "patch") != 0 || countVerb(cs, "update") != 0 {
		t.Fatalf("%d Bindings, %d patches, %d updates; want one Binding and nothing else", len(made), countVerb(cs, "patch"), countVerb(cs, "update"))
	}
	bnd := made[0]
	if bnd.Target.Name != "n1" || bnd.UID != pod.UID {
		t.Fatalf("Binding %+v", bnd)
	}
	a, err := annotation.DecodeAssignment(bnd.Annotations[contract.AnnotationAssignment])
	if err != nil {
		t.Fatalf("assignment in the Binding: %v", err)
	}
	if a.Node != "n1" || len(a.Containers) != 1 || len(a.Containers[0].Devices) != 1 ||
		a.Containers[0].Devices[0].MemoryMiB != 30000 || a.Containers[0].Devices[0].Cores != 20 {
		t.Fatalf("assignment %+v", a)
	}

	// The scheduler retries (say its call timed out after the Binding went
	// through): nothing is written or booked twice.
	applyBinding(t, cs, bnd)
	waitFor(t, func() bool { p, ok := st.Pod("ns", "a"); return ok && p.Spec.NodeName == "n1" })
	result, err = b.Bind(context.Background(), args(pod, "n1"))
	if err != nil || result != Already {
		t.Fatalf("retried bind: %s %v", result, err)
	}
	if len(bindingsMade(cs)) != 1 || st.Ledger.PodCount() != 1 {
		t.Errorf("after a retry: %d Bindings, %d pods booked; want 1 and 1", len(bindingsMade(cs)), st.Ledger.PodCount())
	}
}

func TestConcurrentBindsNeverShareAGPU(t *testing.T) {
	// One GPU of 80 GiB, two pods of 60 GiB: one bind must lose.
	p1, p2 := pendingPod("p1", "61440"), pendingPod("p2", "61440")
	_, st, b := setup(t, gpuNode(t, "n1", 1), p1, p2)
	errs := make(chan error, 2)
	results := make(chan string, 2)
	for _, p := range []*corev1.Pod{p1, p2} {
		go func() {
			r, err := b.Bind(context.Background(), args(p, "n1"))
			results <- r
			errs <- err
		}()
	}
	var failed []error
	var rs []string
	for range 2 {
		rs = append(rs, <-results)
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) != 1 || !strings.Contains(failed[0].Error(), "no longer fits") {
		t.Fatalf("results %v, errors %v: want exactly one lost race", rs, failed)
	}
	if st.Ledger.PodCount() != 1 {
		t.Fatalf("ledger books %d pods, want 1", st.Ledger.PodCount())
	}
}

func TestFailedBindingUndoesTheBooking(t *testing.T) {
	pod := pendingPod("a", "30000")
	cs, st, b := setup(t, gpuNode(t, "n1", 2), pod)
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "binding" {
			return true, nil, errors.New("etcd unavailable")
		}
		return false, nil, nil
	})
	result, err := b.Bind(context.Background(), args(pod, "n1"))
	if err == nil || result != Failed || !strings.Contains(err.Error(), "etcd unavailable") {
		t.Fatalf("bind: %s %v, want the Binding's error", result, err)
	}
	if _, ok := st.Ledger.Holds(string(pod.UID)); ok {
		t.Fatal("a failed bind left the GPUs booked")
	}
	if countVerb(cs, "patch") != 0 {
		t.Fatal("a failed bind wrote to the pod")
	}
}

func TestBindingThatWentThroughEarlier(t *testing.T) {
	// An earlier attempt's Binding succeeded but its answer was lost; the
	// retry's Binding fails (already bound): the earlier assignment counts.
	pod := pendingPod("a", "30000")
	cs, st, b := setup(t, gpuNode(t, "n1", 2), pod)
	if _, err := b.Bind(context.Background(), args(pod, "n1")); err != nil {
		t.Fatal(err)
	}
	first := bindingsMade(cs)[0]
	st.Ledger.Release(string(pod.UID)) // as if this were a fresh extender
	applyBinding(t, cs, first)
	bound, _ := cs.CoreV1().Pods("ns").Get(context.Background(), "a", metav1.GetOptions{})
	cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, bound, nil })
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "binding" {
			return true, nil, errors.New("pod a is already assigned to node n1")
		}
		return false, nil, nil
	})
	result, err := b.Bind(context.Background(), args(pod, "n1"))
	if err != nil || (result != Already && result != Bound) {
		t.Fatalf("bind: %s %v", result, err)
	}
	if node, ok := st.Ledger.Holds(string(pod.UID)); !ok || node != "n1" {
		t.Fatalf("the bound pod's GPUs are not booked (holds %q %v)", node, ok)
	}
}

func TestBindErrors(t *testing.T) {
	pod := pendingPod("a", "30000")
	_, _, b := setup(t, gpuNode(t, "n1", 1), pod)
	if _, err := b.Bind(context.Background(), args(pod, "nowhere")); err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Errorf("bind to a node without inventory: %v", err)
	}
	other := args(pod, "n1")
	other.PodUID = "someone-else"
	if _, err := b.Bind(context.Background(), other); err == nil || !strings.Contains(err.Error(), "recreated") {
		t.Errorf("bind of a recreated pod: %v", err)
	}
	missing := args(pendingPod("ghost", "1"), "n1")
	if _, err := b.Bind(context.Background(), missing); err == nil {
		t.Error("bind of a pod that does not exist succeeded")
	}
}

func countVerb(cs *fake.Clientset, verb string) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == verb {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
