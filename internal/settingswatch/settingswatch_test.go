package settingswatch

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/lib/settings"
)

// The watcher follows the ConfigMap: changes apply at once and reach
// onChange, a typo keeps what is in force, a deletion brings the defaults.
func TestFollowsTheConfigMap(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "vgpu-settings", Namespace: "vgpu-system"},
		Data: map[string]string{"nodeSchedulerPolicy": "spread"}}
	cs := fake.NewClientset(cm)
	var changes atomic.Int32
	var last atomic.Pointer[settings.Settings]
	w, err := New(cs, "vgpu-system", "vgpu-settings", zap.NewNop(), func(s settings.Settings) {
		changes.Add(1)
		last.Store(&s)
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		w.Shutdown()
	}()
	w.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), w.HasSynced) {
		t.Fatal("not synced")
	}
	want := settings.Default()
	want.NodeSchedulerPolicy = settings.Spread
	eventually(t, w, want)

	cms := cs.CoreV1().ConfigMaps("vgpu-system")
	cm.Data = map[string]string{"gpuSchedulerPolicy": "binpack", "deviceSplitCount": "4"}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want = settings.Default()
	want.GPUSchedulerPolicy, want.DeviceSplitCount = settings.Binpack, 4
	eventually(t, w, want)

	// A typo keeps what is in force.
	cm.Data = map[string]string{"gpuSchedulerPolicy": "binpak"}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := w.Get(); got != want {
		t.Fatalf("after an invalid update: %+v, want the previous %+v", got, want)
	}
	if n := changes.Load(); n != 2 || *last.Load() != want {
		t.Fatalf("onChange called %d times, last with %+v; want twice, last with %+v", n, *last.Load(), want)
	}

	if err := cms.Delete(ctx, "vgpu-settings", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, w, settings.Default())
}

func eventually(t *testing.T, w *Watcher, want settings.Settings) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for w.Get() != want {
		if time.Now().After(deadline) {
			t.Fatalf("settings %+v, want %+v", w.Get(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
