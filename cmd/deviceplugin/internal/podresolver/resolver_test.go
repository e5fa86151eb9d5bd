package podresolver

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/assign"
)

const node = "n1"

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type c struct {
	name          string
	init, sidecar bool
	gpus          []string
}

// pod is a pending pod bound to the node; each container was given its
// gpus and asks for as many.
func pod(name string, sec int, cs ...c) *corev1.Pod {
	a := assign.Pod{Node: node}
	for _, x := range cs {
		ac := assign.Container{Name: x.name, Init: x.init || x.sidecar, Sidecar: x.sidecar}
		for _, g := range x.gpus {
			ac.Devices = append(ac.Devices, assign.Device{UUID: g, MemoryMiB: 100})
		}
		a.Containers = append(a.Containers, ac)
	}
	return testutil.Pod(name, testutil.Phase(corev1.PodPending), testutil.Created(t0.Add(time.Duration(sec)*time.Second)), testutil.Assigned(a), testutil.AskingFor(a))
}

func resolver(t *testing.T, pods ...*corev1.Pod) *Resolver {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return New(node, fake.NewClientset(), corelisters.NewPodLister(idx), zap.NewNop())
}

// watched is a resolver whose informer delivered pods in this order (the
// watch's: the bindings').
func watched(t *testing.T, pods ...*corev1.Pod) (*Resolver, cache.Indexer) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	r := New(node, fake.NewClientset(), corelisters.NewPodLister(idx), zap.NewNop())
	for _, p := range pods {
		add(t, r, idx, p)
	}
	return r, idx
}

func add(t *testing.T, r *Resolver, idx cache.Indexer, p *corev1.Pod) {
	t.Helper()
	if err := idx.Add(p); err != nil {
		t.Fatal(err)
	}
	r.Observe(p)
}

func resolve(t *testing.T, r *Resolver, gpus ...string) string {
	t.Helper()
	tg, err := r.Resolve(context.Background(), len(gpus), gpus)
	if err != nil {
		t.Fatal(err)
	}
	k := tg.Pod.Name + "/" + tg.Container.Name
	if tg.Container.Init {
		k += "(init)"
	}
	return k
}

func TestOrder(t *testing.T) {
	running := pod("running", 0, c{name: "m", gpus: []string{"A"}})
	running.Status.Phase = corev1.PodRunning
	elsewhere := pod("elsewhere", 0, c{name: "m", gpus: []string{"A"}})
	elsewhere.Spec.NodeName = "other"
	r := resolver(t,
		running, elsewhere,
		pod("second", 2, c{name: "m", gpus: []string{"B"}}),
		pod("first", 1, c{name: "setup", init: true, gpus: []string{"C"}}, c{name: "two", gpus: []string{"A", "B"}}, c{name: "m", gpus: []string{"D"}}),
	)
	for i, want := range []struct {
		gpus []string
		got  string
	}{
		{[]string{"C"}, "first/setup(init)"},
		// Two devices: only first/two asks for two.
		{[]string{"A", "B"}, "first/two"},
		{[]string{"D"}, "first/m"},
		{[]string{"B"}, "second/m"},
	} {
		if got := resolve(t, r, want.gpus...); got != want.got {
			t.Fatalf("allocation %d: resolved %s, want %s", i, got, want.got)
		}
	}
	if _, err := r.Resolve(context.Background(), 1, []string{"A"}); err == nil || !strings.Contains(err.Error(), "node n1: no pod bound to this node") {
		t.Fatalf("with nothing waiting: %v", err)
	}
}

// Pods created in the same second are ordered by the GPUs of the ids the
// kubelet was steered to; by name only when those do not decide.
func TestSameSecondTieBrokenByGPUs(t *testing.T) {
	r := resolver(t, pod("a", 0, c{name: "m", gpus: []string{"A"}}), pod("b", 0, c{name: "m", gpus: []string{"B"}}), pod("later", 1, c{name: "m", gpus: []string{"B"}}))
	if got := r.Preferred(1); len(got) != 1 || got[0] != "A" {
		t.Fatalf("Preferred = %v, want the oldest by name, a's GPU A", got)
	}
	if got := resolve(t, r, "B"); got != "b/m" {
		t.Fatalf("ids on B resolved %s, want b/m", got)
	}
	if got := resolve(t, r, "B"); got != "a/m" {
		t.Fatalf("ids on B again resolved %s, want a/m: a pod created later does not overtake", got)
	}
}

// A pod whose Allocate failed after it was resolved is failed by the
// kubelet: the next Allocate is for the pod behind it, never for it again.
func TestRejectedPodLeavesTheQueue(t *testing.T) {
	r := resolver(t, pod("a", 0, c{name: "m", gpus: []string{"A"}}), pod("b", 1, c{name: "m", gpus: []string{"A"}}))
	tg, err := r.Resolve(context.Background(), 1, []string{"A"})
	if err != nil {
		t.Fatal(err)
	}
	r.Reject(tg)
	if got := resolve(t, r, "A"); got != "b/m" {
		t.Fatalf("after a's allocation failed resolved %s, want b/m", got)
	}
}

func boundAt(p *corev1.Pod, rv string) *corev1.Pod {
	p.ResourceVersion = rv
	return p
}

// The kubelet admits pods in the order their bindings reach it, not in
// creation order. Two pods created in the same second with the same
// request on the same GPU, bound in the opposite order of their names (the
// scheduler's binding cycles run concurrently), must each get their own
// container, not the other's region directory.
func TestAdmittedInBindingOrder(t *testing.T) {
	first := boundAt(pod("first", 0, c{name: "cuda", gpus: []string{"A"}}), "12")
	second := boundAt(pod("second", 0, c{name: "cuda", gpus: []string{"A"}}), "11")
	r := resolver(t, first, second)
	if got := r.Preferred(1); len(got) != 1 || got[0] != "A" {
		t.Fatalf("Preferred = %v", got)
	}
	for i, want := range []string{"second/cuda", "first/cuda"} {
		if got := resolve(t, r, "A"); got != want {
			t.Fatalf("allocation %d: resolved %s, want %s (the pods were bound second, then first)", i, got, want)
		}
	}
}

// A pod created earlier but bound later is admitted later; and a write to a
// waiting pod after its binding (a label, an annotation) does not move it:
// the resourceVersion its add event carried stands.
func TestBindingOrderSurvivesLaterWrites(t *testing.T) {
	older := boundAt(pod("older", 0, c{name: "m", gpus: []string{"A"}}), "30")
	newer := boundAt(pod("newer", 5, c{name: "m", gpus: []string{"B"}}), "20")
	relabelled := boundAt(pod("relabelled", 9, c{name: "m", gpus: []string{"C"}}), "25")
	r, idx := watched(t, newer, relabelled, older)
	later := relabelled.DeepCopy()
	later.ResourceVersion = "40"
	later.Labels = map[string]string{"team": "x"}
	if err := idx.Update(later); err != nil {
		t.Fatal(err)
	}
	r.Observe(later)
	for i, want := range []struct{ gpu, got string }{{"B", "newer/m"}, {"C", "relabelled/m"}, {"A", "older/m"}} {
		if p := r.Preferred(1); len(p) != 1 || p[0] != want.gpu {
			t.Fatalf("allocation %d: Preferred = %v, want %s's GPU %s", i, p, want.got, want.gpu)
		}
		if got := resolve(t, r, want.gpu); got != want.got {
			t.Fatalf("allocation %d: resolved %s, want %s", i, got, want.got)
		}
	}
}

// A restarted kubelet admits the pods it finds bound to its node in one
// batch, oldest first, whatever the order of their bindings; pods bound
// after it started come after them, in binding order. A pod whose
// Allocate failed before the restart is admitted again if it is still
// Pending (the kubelet had not reported its failure).
func TestKubeletRestartAdmitsWaitingPodsOldestFirst(t *testing.T) {
	older := boundAt(pod("older", 0, c{name: "m", gpus: []string{"A"}}), "30")
	newer := boundAt(pod("newer", 5, c{name: "m", gpus: []string{"B"}}), "20")
	refused := boundAt(pod("refused", 7, c{name: "m", gpus: []string{"D"}}), "10")
	r, idx := watched(t, refused, newer, older)
	tg, err := r.Resolve(context.Background(), 1, []string{"D"})
	if err != nil || tg.Pod.Name != "refused" {
		t.Fatalf("resolved %v, %v; want refused", tg, err)
	}
	r.Reject(tg)

	r.KubeletStarted()
	add(t, r, idx, boundAt(pod("late", 1, c{name: "m", gpus: []string{"C"}}), "40"))
	for i, want := range []struct{ gpu, got string }{{"A", "older/m"}, {"B", "newer/m"}, {"D", "refused/m"}, {"C", "late/m"}} {
		if p := r.Preferred(1); len(p) != 1 || p[0] != want.gpu {
			t.Fatalf("allocation %d: Preferred = %v, want %s's GPU %s", i, p, want.got, want.gpu)
		}
		if got := resolve(t, r, want.gpu); got != want.got {
			t.Fatalf("allocation %d: resolved %s, want %s", i, got, want.got)
		}
	}
}

// The kubelet allocates a pod's containers one after another, and gives a
// container after an init container that init container's device ids
// again (without asking for a preference): those ids say nothing about
// which pod is next. A pod created in the same second whose GPU they are
// must not take the rest of the pod's containers.
func TestInitContainersDevicesReusedByTheNextContainer(t *testing.T) {
	for _, rv := range []bool{false, true} {
		x := pod("x", 0, c{name: "setup", init: true, gpus: []string{"C"}}, c{name: "m", gpus: []string{"A"}})
		y := pod("y", 0, c{name: "m", gpus: []string{"C"}})
		if rv {
			boundAt(x, "10")
			boundAt(y, "11")
		}
		r := resolver(t, x, y)
		for i, want := range []string{"x/setup(init)", "x/m", "y/m"} {
			if got := resolve(t, r, "C"); got != want {
				t.Fatalf("resourceVersions %v, allocation %d on the init container's ids: resolved %s, want %s", rv, i, got, want)
			}
		}
	}
}

// A sidecar (restartable init container) is allocated in spec order among
// the init containers and gets its own share, not an init container's: the
// kubelet keeps its devices for the pod's life.
func TestSidecarGetsItsOwnShareInSpecOrder(t *testing.T) {
	x := pod("x", 0, c{name: "setup", init: true, gpus: []string{"B"}}, c{name: "proxy", sidecar: true, gpus: []string{"A"}},
		c{name: "late", init: true, gpus: []string{"A"}}, c{name: "m", gpus: []string{"A"}})
	if got := x.Spec.InitContainers[1]; got.Name != "proxy" || got.RestartPolicy == nil || *got.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("init container 1 = %s, want the restartable proxy", got.Name)
	}
	r := resolver(t, x)
	for i, want := range []struct {
		gpu, got string
		sidecar  bool
	}{{"B", "x/setup(init)", false}, {"A", "x/proxy(init)", true}, {"A", "x/late(init)", false}, {"A", "x/m", false}} {
		tg, err := r.Resolve(context.Background(), 1, []string{want.gpu})
		if err != nil {
			t.Fatal(err)
		}
		got := tg.Pod.Name + "/" + tg.Container.Name
		if tg.Container.Init {
			got += "(init)"
		}
		if got != want.got || tg.Container.Sidecar != want.sidecar || tg.Container.Devices[0].UUID != want.gpu {
			t.Fatalf("allocation %d: resolved %s (sidecar %v, %s), want %s (sidecar %v, %s)",
				i, got, tg.Container.Sidecar, tg.Container.Devices[0].UUID, want.got, want.sidecar, want.gpu)
		}
	}
}

// Only where the kubelet's order within a second is not known does the
// GPU of the ids decide: pods bound in a known order are admitted in it,
// even when the kubelet could not follow the steering.
func TestBindingOrderIsNotOverriddenByTheIdsGPU(t *testing.T) {
	first := boundAt(pod("first", 0, c{name: "m", gpus: []string{"A"}}), "10")
	second := boundAt(pod("second", 0, c{name: "m", gpus: []string{"B"}}), "11")
	r := resolver(t, first, second)
	if got := resolve(t, r, "B"); got != "first/m" {
		t.Fatalf("ids on B resolved %s, want first/m: it was bound first", got)
	}
}

// A pod being deleted is still admitted by the kubelet if its binding
// reached it (the kubelet admits every pod it is told of, deletion
// timestamp or not, and learns of the deletion after): it keeps its place.
func TestPodBeingDeletedKeepsItsPlace(t *testing.T) {
	a := boundAt(pod("a", 0, c{name: "m", gpus: []string{"A"}}), "10")
	b := boundAt(pod("b", 1, c{name: "m", gpus: []string{"B"}}), "11")
	b.DeletionTimestamp = &metav1.Time{Time: t0}
	cc := boundAt(pod("c", 2, c{name: "m", gpus: []string{"C"}}), "12")
	r := resolver(t, a, b, cc)
	for i, want := range []struct{ gpu, got string }{{"A", "a/m"}, {"B", "b/m"}, {"C", "c/m"}} {
		if p := r.Preferred(1); len(p) != 1 || p[0] != want.gpu {
			t.Fatalf("allocation %d: Preferred = %v, want %s's GPU %s", i, p, want.got, want.gpu)
		}
		if got := resolve(t, r, want.gpu); got != want.got {
			t.Fatalf("allocation %d: resolved %s, want %s", i, got, want.got)
		}
	}
}
