package testutil

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
)

func TestPod(t *testing.T) {
	at := time.Unix(1700000000, 0)
	p := Pod("train", Namespace("team-a"), Node("n1"), Phase(corev1.PodRunning), Created(at), Scheduler("vgpu-scheduler"),
		Annotations(map[string]string{"a": "1"}), Container("c", "nvidia.com/gpumem", "8000", "nvidia.com/gpucores", "30"), Container("d"))
	if p.Name != "train" || p.Namespace != "team-a" || p.UID != "uid-train" || p.Spec.NodeName != "n1" ||
		p.Status.Phase != corev1.PodRunning || !p.CreationTimestamp.Time.Equal(at) || p.Spec.SchedulerName != "vgpu-scheduler" || p.Annotations["a"] != "1" {
		t.Errorf("pod %+v", p)
	}
	mem := p.Spec.Containers[0].Resources.Limits["nvidia.com/gpumem"]
	if len(p.Spec.Containers) != 2 || mem.Value() != 8000 || len(p.Spec.Containers[1].Resources.Limits) != 0 {
		t.Errorf("containers %+v", p.Spec.Containers)
	}
}

// The options that shape containers and bind a pod: init containers,
// requests, claims, the assignment annotation the product decodes, and
// containers asking for what the assignment gives.
func TestPodContainersAndAssignment(t *testing.T) {
	a := assign.Pod{Node: "n1", Containers: []assign.Container{
		{Name: "fetch", Init: true, Devices: []assign.Device{{UUID: "GPU-0", MemoryMiB: 100}}},
		{Name: "main", Devices: []assign.Device{{UUID: "GPU-0", MemoryMiB: 200, Cores: 30}, {UUID: "GPU-1", MemoryMiB: 200, Cores: 30}}}}}
	p := Pod("p", Assigned(a), AskingFor(a), Container("side"), Requests("side", "cpu", "10m"), Claim("side", "gpu", "p-gpu"))
	got, err := annotation.DecodeAssignment(p.Annotations[contract.AnnotationAssignment])
	if err != nil || !reflect.DeepEqual(got, a) || p.Spec.NodeName != "n1" {
		t.Fatalf("assignment %+v (%v) on node %q, want %+v on n1", got, err, p.Spec.NodeName, a)
	}
	gpus := func(c corev1.Container) int64 { q := c.Resources.Limits[contract.ResourceGPU]; return q.Value() }
	if len(p.Spec.InitContainers) != 1 || p.Spec.InitContainers[0].Name != "fetch" || gpus(p.Spec.InitContainers[0]) != 1 {
		t.Errorf("init containers %+v", p.Spec.InitContainers)
	}
	if len(p.Spec.Containers) != 2 || p.Spec.Containers[0].Name != "main" || gpus(p.Spec.Containers[0]) != 2 {
		t.Errorf("containers %+v", p.Spec.Containers)
	}
	side := p.Spec.Containers[1]
	if cpu := side.Resources.Requests[corev1.ResourceCPU]; cpu.MilliValue() != 10 || len(side.Resources.Limits) != 0 || side.Image != Image {
		t.Errorf("side %+v", side)
	}
	if len(side.Resources.Claims) != 1 || side.Resources.Claims[0].Name != "gpu" || len(p.Spec.ResourceClaims) != 1 ||
		p.Spec.ResourceClaims[0].Name != "gpu" || *p.Spec.ResourceClaims[0].ResourceClaimName != "p-gpu" {
		t.Errorf("claims %+v, pod claims %+v", side.Resources.Claims, p.Spec.ResourceClaims)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Requests on a container the pod lacks did not panic")
			}
		}()
		Pod("p", Requests("nope", "cpu", "1"))
	}()
}

// A differing output fails, a matching one passes, a missing file says how
// to create it.
func TestGolden(t *testing.T) {
	dir := t.TempDir()
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "x.golden"), []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, got string
		fail      bool
	}{{"x", "one\n", false}, {"x", "two\n", true}, {"missing", "", true}} {
		ft := &fakeT{TB: t}
		func() {
			defer func() { _ = recover() }()
			Golden(ft, c.name, c.got)
		}()
		if ft.failed != c.fail {
			t.Errorf("Golden(%s, %q) failed=%v, want %v", c.name, c.got, ft.failed, c.fail)
		}
	}
}

type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper()               {}
func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Fatalf(string, ...any) { f.failed = true; panic("fatal") }
func (f *fakeT) Fatal(...any)          { f.failed = true; panic("fatal") }

func TestSources(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{"a/x.go", "a/x_test.go", "a/testdata/y.go", "a/.hidden/z.go", "a/b/w.c", "a/b/v.txt"} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	Sources(t, root, []string{"a"}, []string{".go", ".c"}, func(rel string, src []byte) {
		if rel != string(src) {
			t.Errorf("%s holds %q", rel, src)
		}
		got = append(got, rel)
	})
	if strings.Join(got, " ") != "a/b/w.c a/x.go a/x_test.go" {
		t.Errorf("read %v", got)
	}
}

// podLiteral matches a Pod built by hand: a composite literal, not a slice
// or map of pods.
var podLiteral = regexp.MustCompile(`(^|[^\]*])corev1\.Pod\{`)

// handBuilt are the tests that may build their pods by hand, and why.
var handBuilt = map[string]string{
	// The pod exactly as kube-scheduler sends it (managed fields,
	// defaulted spec, tolerations): the benchmark's payload, not a shape.
	"cmd/extender/internal/handler/cycle_test.go": "a verbatim kube-scheduler payload",
	// Real containers on the real node: their images, arguments,
	// environment and restart policy.
	"test/e2e/realnode/workload_test.go": "a workload run by a real kubelet",
	"test/e2e/realnode/realnode_test.go": "a pause pod run by a real kubelet",
}

// Tests build pods with Pod, so that a change of shape is made once; lib's
// tests cannot import this module and are left out.
func TestPodsAreBuiltHere(t *testing.T) {
	Sources(t, filepath.Join("..", ".."), []string{"cmd", "internal", "test", "kustomize"}, []string{"_test.go"}, func(path string, b []byte) {
		if loc := podLiteral.FindIndex(b); loc != nil && handBuilt[filepath.ToSlash(path)] == "" {
			t.Errorf("%s:%d: a pod built by hand; use internal/testutil.Pod", path, 1+strings.Count(string(b[:loc[0]]), "\n"))
		}
	})
	for path := range handBuilt {
		b, err := os.ReadFile(filepath.Join("..", "..", path))
		if err != nil || !podLiteral.Match(b) {
			t.Errorf("%s is allowed to build pods by hand but does not (%v): drop it from handBuilt", path, err)
		}
	}
}
