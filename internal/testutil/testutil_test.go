package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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
