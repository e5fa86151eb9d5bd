package cleanup

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

type fakePods struct {
	synced bool
	live   map[string]bool
}

func (f *fakePods) Synced() bool           { return f.synced }
func (f *fakePods) Exists(uid string) bool { return f.live[uid] }

func TestSweepRemovesOnlyAfterGrace(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"live_a", "gone_a", "gone_b", "back_a"} {
		if err := os.MkdirAll(filepath.Join(dir, n), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n, "region"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n+".limits"), []byte("x"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	pods := &fakePods{synced: false, live: map[string]bool{"live": true}}
	now := time.Unix(1000, 0)
	removed := prometheus.NewCounter(prometheus.CounterOpts{Name: "removed"})
	s := &Sweeper{Dir: dir, Pods: pods, Grace: time.Minute, Log: zap.NewNop(), Removed: removed, Now: func() time.Time { return now }}

	if got := s.Sweep(); len(got) != 0 {
		t.Fatalf("removed %v before the pod cache synced", got)
	}
	pods.synced = true
	if got := s.Sweep(); len(got) != 0 {
		t.Fatalf("removed %v on first sight", got)
	}
	now = now.Add(30 * time.Second)
	pods.live["back"] = true // the cache caught up with this pod
	if got := s.Sweep(); len(got) != 0 {
		t.Fatalf("removed %v within the grace period", got)
	}
	now = now.Add(31 * time.Second)
	got := s.Sweep()
	want := []string{filepath.Join(dir, "gone_a"), filepath.Join(dir, "gone_b")}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("removed %v, want %v", got, want)
	}
	for _, n := range []string{"live_a", "back_a"} {
		if _, err := os.Stat(filepath.Join(dir, n, "region")); err != nil {
			t.Fatalf("%s of a live pod was touched: %v", n, err)
		}
	}
	for _, n := range []string{"gone_a", "gone_b", "gone_a.limits", "gone_b.limits"} {
		if _, err := os.Stat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Fatalf("%s still there: %v", n, err)
		}
	}
	for _, n := range []string{"live_a.limits", "back_a.limits"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Fatalf("%s of a live pod was touched: %v", n, err)
		}
	}
	if v := testutil.ToFloat64(removed); v != 2 {
		t.Fatalf("removed counter = %v, want 2", v)
	}
}

func TestPodThatReappearsResetsItsClock(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "p_a"), 0o755); err != nil {
		t.Fatal(err)
	}
	pods := &fakePods{synced: true, live: map[string]bool{}}
	now := time.Unix(0, 0)
	s := &Sweeper{Dir: dir, Pods: pods, Grace: time.Minute, Log: zap.NewNop(), Now: func() time.Time { return now }}
	s.Sweep()
	now = now.Add(50 * time.Second)
	pods.live["p"] = true
	s.Sweep()
	delete(pods.live, "p")
	now = now.Add(20 * time.Second)
	s.Sweep()
	if got := s.Sweep(); len(got) != 0 {
		t.Fatalf("removed %v: the pod was seen 20 s ago, grace is 1 min", got)
	}
}
