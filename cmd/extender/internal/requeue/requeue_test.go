package requeue

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

func annotated(t *testing.T, cs *fake.Clientset, name string) bool {
	t.Helper()
	p, err := cs.CoreV1().Pods("ns").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, ok := p.Annotations[Annotation]
	return ok
}

func TestNudgesRecentRejectionsOnRelease(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cs := fake.NewClientset()
	n := New(cs, zap.NewNop())
	clock := base
	n.now = func() time.Time { return clock }
	var nudges atomic.Int64
	n.Nudged = func() { nudges.Add(1) }
	nudged := func() int { return int(nudges.Load()) }

	var pods []*corev1.Pod
	for i := 0; i < MaxPerRound+5; i++ {
		// Created newest first, so that the oldest-first order is visible.
		p := testutil.Pod(fmt.Sprintf("p%03d", i), testutil.Created(base.Add(-time.Duration(i)*time.Minute)))
		pods = append(pods, p)
		if _, err := cs.CoreV1().Pods("ns").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	stale := testutil.Pod("p999", testutil.Created(base.Add(-time.Hour)))
	if _, err := cs.CoreV1().Pods("ns").Create(context.Background(), stale, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.Rejected(stale)
	clock = clock.Add(Window + time.Second)
	for _, p := range pods {
		n.Rejected(p)
	}
	n.Settled(pods[len(pods)-1].UID) // bound meanwhile: never nudged

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx)
	n.Freed()
	deadline := time.Now().Add(5 * time.Second)
	for nudged() < MaxPerRound && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if nudged() != MaxPerRound {
		t.Fatalf("nudged %d pods, want the %d oldest recent ones", nudged(), MaxPerRound)
	}
	// The oldest recent ones are the highest indexes but the settled one.
	for i, p := range pods {
		want := i >= len(pods)-1-MaxPerRound && i != len(pods)-1
		if got := annotated(t, cs, p.Name); got != want {
			t.Errorf("pod %s (created %v ago) nudged=%v, want %v", p.Name, base.Sub(p.CreationTimestamp.Time), got, want)
		}
	}
	if annotated(t, cs, stale.Name) {
		t.Error("a rejection older than the window was nudged")
	}
	// The rest are nudged by the next release, once each.
	n.Freed()
	deadline = time.Now().Add(5 * time.Second)
	for nudged() < len(pods)-1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if nudged() != len(pods)-1 {
		t.Fatalf("after a second release %d nudges, want %d", nudged(), len(pods)-1)
	}
}

func TestFreedNeverBlocks(t *testing.T) {
	n := New(fake.NewClientset(), zap.NewNop())
	for i := 0; i < 1000; i++ {
		n.Freed() // nobody runs the loop
	}
}
