package inventory

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/metrics"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// A write the API server refuses is retried with a growing delay until it
// lands, and each failure is counted and logged with the delay.
func TestFailedWriteIsRetriedWithBackoff(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	client := fake.NewClientset(node)
	var calls atomic.Int32
	var times [4]time.Time
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		n := calls.Add(1)
		if int(n) <= len(times) {
			times[n-1] = time.Now()
		}
		if n <= 3 {
			return true, nil, errors.New("etcd is having a bad day")
		}
		return false, nil, nil
	})
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = idx.Add(node)
	core, logs := observer.New(zap.WarnLevel)
	m := metrics.New(prometheus.NewRegistry())
	p := &Publisher{Node: "n1", Client: client, Nodes: corelisters.NewNodeLister(idx), Metrics: m, Log: zap.New(core),
		State:     gpustate.New([]device.GPU{{UUID: "GPU-1", Model: "T4", MemoryMiB: 15360, Healthy: true}}, settings.Default()),
		RetryBase: 20 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go p.Run(ctx, nil)

	for {
		n, err := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Annotations[contract.AnnotationDevices] != "" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("inventory never written after %d attempts", calls.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.InventoryWrites.WithLabelValues("error")); got != 3 {
		t.Errorf("%v failed writes counted, want 3", got)
	}
	if n := logs.FilterMessage("publishing the node inventory failed; retrying").Len(); n != 3 {
		t.Errorf("%d retry warnings logged, want 3", n)
	}
	// 20, 40, 80 ms: each wait at least the one before, doubled.
	for i := 1; i < 4; i++ {
		want := 20 * time.Millisecond << (i - 1)
		if gap := times[i].Sub(times[i-1]); gap < want {
			t.Errorf("retry %d came %v after the failure, want ≥ %v", i, gap, want)
		}
	}
}
