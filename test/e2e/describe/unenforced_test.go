package describe

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/region"
	"github.com/vgpu-io/vgpu/test/cluster"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

// TestMonitorUnenforcedOnControlPlane runs the real monitor, with the
// manifests' permissions, against the real API server: a container whose
// limits are set but whose region never appears is reported unenforced
// (metric and Event) and left running; one whose libvgpu said it cannot
// enforce is reported, and evicted through the real Eviction API once the
// settings ConfigMap says evict.
func TestMonitorUnenforcedOnControlPlane(t *testing.T) {
	c := cluster.Run(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes, inv := gpuNodes(t, ctx, c, 1)
	target := nodes[0]
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: contract.DefaultNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	settings := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: contract.DefaultNamespace, Name: contract.SettingsConfigMap},
		Data: map[string]string{"unenforcedAction": "report"}}
	if _, err := c.Client.CoreV1().ConfigMaps(contract.DefaultNamespace).Create(ctx, settings, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	created := bindOnNode(t, ctx, c, target, inv,
		testutil.Pod("no-libvgpu", testutil.Namespace(ns), app, testutil.Container("main", contract.ResourceMemory, "4096", contract.ResourceCores, "20")),
		testutil.Pod("broken", testutil.Namespace(ns), app, testutil.Container("main", contract.ResourceMemory, "4096")))
	if _, err := c.WaitForPods(ctx, ns, "app=describe", 2, cluster.PodRunning); err != nil {
		t.Fatal(err)
	}
	a, err := annotation.DecodeAssignment(created["broken"].Annotations[contract.AnnotationAssignment])
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	r := region.Region{Header: region.Header{Magic: region.Magic, Version: region.Version, DeviceCount: 1,
		Flags: region.FlagUnenforced, Reason: region.ReasonBadEnv, ReasonText: "limits file: VGPU_MEMORY_LIMITS_MIB: not a number"}}
	r.Devices[0] = region.Device{UUID: a.Containers[0].Devices[0].UUID, MemLimit: 4096 << 20}
	brokenDir := filepath.Join(root, "containers", contract.ContainerDirName(string(created["broken"].UID), "main"))
	if err := os.MkdirAll(brokenDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(brokenDir, contract.RegionFileName), r.Encode(), 0o666); err != nil {
		t.Fatal(err)
	}
	// no-libvgpu: the device plugin made the directory, nobody attached
	if err := os.MkdirAll(filepath.Join(root, "containers", contract.ContainerDirName(string(created["no-libvgpu"].UID), "main")), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := runMonitor(t, ctx, c, target, root, "--region-grace", "1s", "--audit-interval", "200ms", "--audit-confirm", "0s")

	metric := func(pod, reason string) bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), fmt.Sprintf(`pod=%q,reason=%q} 1`, pod, reason))
	}
	events := func(reason string) map[string]bool {
		evs, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, e := range evs.Items {
			if e.Reason == reason && e.Type == corev1.EventTypeWarning && e.Source.Component == "vgpu-monitor" {
				got[e.InvolvedObject.Name] = true
			}
		}
		return got
	}
	within(t, 30*time.Second, "both containers reported unenforced, with an Event each", func() bool {
		ev := events("GPULimitsUnenforced")
		return metric("no-libvgpu", "no-region") && metric("broken", "bad-env") && ev["no-libvgpu"] && ev["broken"]
	})
	if p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "broken", metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Fatalf("evicted while the settings say report: %v", err)
	}

	settings.Data["unenforcedAction"] = "evict"
	if _, err := c.Client.CoreV1().ConfigMaps(contract.DefaultNamespace).Update(ctx, settings, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	within(t, 30*time.Second, "the pod libvgpu could not limit evicted", func() bool {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "broken", metav1.GetOptions{})
		return err != nil || p.DeletionTimestamp != nil
	})
	if !events("GPULimitsUnenforcedEvicting")["broken"] {
		t.Error("no Event says why the pod was evicted")
	}
	time.Sleep(time.Second) // several more passes
	if p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "no-libvgpu", metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Fatalf("a container that only lacks a region was evicted: %v", err)
	}
}

func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after %s", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
