package placement

import (
	"testing"

	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
)

var fragPol = Policies{Node: settings.Fragmentation, GPU: settings.Fragmentation}

func learned(pods ...*request.Pod) *Mix {
	m := NewMix(MixOptions{HalfLife: DefaultHalfLife})
	for _, p := range pods {
		m.Observe(p)
	}
	m.Refresh()
	return m
}

func times(n int, p *request.Pod) []*request.Pod {
	out := make([]*request.Pod, n)
	for i := range out {
		out[i] = p
	}
	return out
}

func best(t *testing.T, l *ledger.Ledger, pod *request.Pod, pol Policies, names ...string) string {
	t.Helper()
	i := Best(pod, l.Lookup(names, nil), pol, nil)
	if i < 0 {
		return ""
	}
	return names[i]
}

// TestFragmentationRespectsTypeConstraints: the cluster mostly receives
// T4-only whole-GPU pods. A share that may go anywhere goes to the A100,
// keeping the T4 whole, where binpack (a tie, broken by name) takes the T4.
func TestFragmentationRespectsTypeConstraints(t *testing.T) {
	l := ledger.New()
	l.SetInventory("a-t4", gpus(10, 1, "T4:16384"))
	l.SetInventory("b-a100", gpus(10, 1, "A100:40960"))
	t4Whole := &request.Pod{Containers: []request.Container{share("c", 1, 0, 0, 100)}, Selector: request.Selector{UseTypes: []string{"T4"}}}
	half := &request.Pod{Containers: []request.Container{share("c", 1, 0, 50, 50)}}
	pol := fragPol
	pol.Mix = learned(append(times(9, t4Whole), half)...)
	if got := best(t, l, half, pol, "a-t4", "b-a100"); got != "b-a100" {
		t.Errorf("fragmentation put the share on %s, want b-a100", got)
	}
	if got := best(t, l, half, Policies{Node: settings.Binpack, GPU: settings.Binpack}, "a-t4", "b-a100"); got != "a-t4" {
		t.Errorf("binpack put the share on %s; the test expects it to take the T4", got)
	}
}

// TestFragmentationCountsHostResources: whole-GPU pods need 8 cores each.
// Node a has 10 cores left, b 40; a 1-GPU pod asking 8 cores would leave
// a's second GPU without the CPU to use it, so it goes to b. Without the
// nodes' CPU (Host unset) the two tie and the name decides.
func TestFragmentationCountsHostResources(t *testing.T) {
	l := ledger.New()
	l.SetInventory("a", gpus(10, 1, "T4:16384", "T4:16384"))
	l.SetInventory("b", gpus(10, 1, "T4:16384", "T4:16384"))
	whole := &request.Pod{Containers: []request.Container{share("c", 1, 0, 0, 100)}, HostCPUMilli: 8000}
	pol := fragPol
	pol.Mix = learned(times(10, whole)...)
	if got := best(t, l, whole, pol, "a", "b"); got != "a" {
		t.Fatalf("without host resources the pod went to %s, want a (the name)", got)
	}
	free := map[string]int64{"a": 10000, "b": 40000}
	pol.Host = func(node string) HostFree { return HostFree{CPUMilli: free[node], MemoryMiB: 1 << 20, Known: true} }
	if got := best(t, l, whole, pol, "a", "b"); got != "b" {
		t.Errorf("with a's CPU short, the pod went to %s, want b", got)
	}
}

// TestFragmentationGPUChoice: on a node whose GPU 0 has 50 % left and GPU
// 1 is empty, a 40 % share goes where it leaves room for the 60 % shares
// the cluster receives: GPU 0 (spread would take GPU 1). Plan and Bind
// choose the same.
func TestFragmentationGPUChoice(t *testing.T) {
	l := ledger.New()
	l.SetInventory("n", gpus(10, 1, "A100:40960", "A100:40960"))
	book(t, l, []held{{"n", "GPU-0", 20480, 50}})
	pod := &request.Pod{Containers: []request.Container{share("c", 1, 0, 40, 40)}}
	pol := fragPol
	pol.Mix = learned(times(10, &request.Pod{Containers: []request.Container{share("c", 1, 0, 60, 60)}})...)
	plan, err := Plan(l, pod, "n", pol)
	if err != nil {
		t.Fatal(err)
	}
	if got := plan.Containers[0].Devices[0].UUID; got != "GPU-0" {
		t.Fatalf("planned %s, want GPU-0", got)
	}
	bound, err := Bind(l, "p", pod, "n", pol)
	if err != nil {
		t.Fatal(err)
	}
	if bound.Containers[0].Devices[0].UUID != "GPU-0" {
		t.Fatalf("Bind chose %s, Plan GPU-0", bound.Containers[0].Devices[0].UUID)
	}
}

// TestFragmentationWithoutMixPacks: before the mix knows any shape the
// policy ranks as binpack does.
func TestFragmentationWithoutMixPacks(t *testing.T) {
	l := ledger.New()
	l.SetInventory("a", gpus(10, 1, "T4:16384"))
	l.SetInventory("b", gpus(10, 1, "T4:16384"))
	book(t, l, []held{{"b", "GPU-0", 1000, 30}})
	pod := &request.Pod{Containers: []request.Container{share("c", 1, 0, 20, 20)}}
	pol := fragPol
	pol.Mix = NewMix(MixOptions{})
	if got := best(t, l, pod, pol, "a", "b"); got != "b" {
		t.Errorf("with an empty mix the pod went to %s, want the fuller b", got)
	}
}

// TestMixLearnsOnline: the snapshot follows the pods that arrived, the
// older ones fading with the half-life, and a stationary stream does not
// rebuild it at every refresh.
func TestMixLearnsOnline(t *testing.T) {
	a := &request.Pod{Containers: []request.Container{share("c", 1, 0, 30, 30)}}
	b := &request.Pod{Containers: []request.Container{share("c", 2, 0, 0, 100)}}
	m := NewMix(MixOptions{HalfLife: 100})
	if m.Snapshot().Len() != 0 {
		t.Fatal("a new mix knows shapes")
	}
	m.Observe(a)
	if m.Snapshot().Len() != 1 {
		t.Fatal("the first pod is not in the snapshot")
	}
	for i := 0; i < 1000; i++ {
		m.Observe(a)
	}
	gen := m.Snapshot().Gen
	for i := 0; i < 1000; i++ {
		m.Observe(a)
	}
	if m.Snapshot().Gen != gen {
		t.Errorf("a stream of one shape rebuilt the snapshot (gen %d → %d)", gen, m.Snapshot().Gen)
	}
	for i := 0; i < 300; i++ {
		m.Observe(b)
	}
	m.Refresh()
	s := m.Snapshot()
	var pb float64
	for _, sh := range s.shapes {
		if s.classes[sh.class].gpus == 2 {
			pb = sh.p
		}
	}
	// 300 pods of b, three half-lives, outweigh 2001 older pods of a.
	if pb < 0.8 {
		t.Errorf("after 300 pods of b (half-life 100) b has probability %.2f, want > 0.8", pb)
	}
	cpu := NewMix(MixOptions{})
	cpu.Observe(&request.Pod{HostCPUMilli: 4000})
	cpu.Refresh()
	if cpu.Snapshot().Len() != 0 || cpu.Seen() != 1 {
		t.Errorf("a CPU-only pod must count as seen but add no GPU shape: %d shapes, %d seen", cpu.Snapshot().Len(), cpu.Seen())
	}
}
