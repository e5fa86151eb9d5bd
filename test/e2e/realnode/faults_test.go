package realnode

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// Restarting the kubelet: the device plugin registers again, the node's
// vGPU slots come back, and a running GPU container keeps running with its
// limit.
func TestKubeletRestart(t *testing.T) {
	installed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "realnode-kubelet-restart"
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, workloadPod("held", "2900"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForOutput(ctx, t, ns, "held", "meminfo")
	before := containerID(ctx, t, ns, "held")

	start := time.Now()
	logged, _ := os.Stat(c.LogPath("kubelet"))
	if err := c.RestartKubelet(ctx); err != nil {
		t.Fatal(err)
	}
	// The new kubelet knows the plugin only once it registers again.
	for {
		b, _ := os.ReadFile(c.LogPath("kubelet"))
		if logged != nil && int64(len(b)) > logged.Size() {
			b = b[logged.Size():]
		}
		if strings.Contains(string(b), "Got registration request from device plugin") && strings.Contains(string(b), contract.ResourceGPU) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the device plugin did not register with the restarted kubelet (%s)", c.LogPath("kubelet"))
		case <-time.After(500 * time.Millisecond):
		}
	}
	waitAllocatable(ctx, t, mockGPUs*splitCount)
	t.Logf("kubelet restarted; the device plugin registered again and allocatable is back after %s", time.Since(start).Round(time.Millisecond))

	if after := containerID(ctx, t, ns, "held"); after != before {
		t.Errorf("the GPU container was replaced across the kubelet restart: %s -> %s", before, after)
	}
	metrics := monitorMetricsOf(ctx, t, ns, "held")
	holdsItsLimit(t, metrics, "held", "the kubelet restart")
}

// Deleting the device plugin's pod: the DaemonSet starts another, which
// registers again with all the node's slots, and a pod started then is
// allocated with its own limit.
func TestDevicePluginPodDeleted(t *testing.T) {
	installed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=vgpu-device-plugin"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("device plugin pods: %v (%d)", err, len(pods.Items))
	}
	old := pods.Items[0]
	if err := c.Client.CoreV1().Pods(namespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		notReady, err := workloadsNotReady(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=vgpu-device-plugin"})
		if err != nil {
			t.Fatal(err)
		}
		if len(notReady) == 0 && len(pods.Items) == 1 && pods.Items[0].UID != old.UID {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the DaemonSet did not replace the deleted device plugin pod: %v", notReady)
		case <-time.After(time.Second):
		}
	}
	waitAllocatable(ctx, t, mockGPUs*splitCount)

	const ns = "realnode-plugin-deleted"
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, workloadPod("fits", "100"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out := waitForOutput(ctx, t, ns, "fits", "meminfo")
	if !strings.Contains(out, "alloc 100 ok") || !strings.Contains(out, "total=3000") {
		t.Errorf("a pod started after the device plugin came back does not get its 3000 MiB:\n%s", out)
	}
}

// containerID is the id of the pod's running container; the pod's status
// may report it a moment after the container printed its first lines.
func containerID(ctx context.Context, t *testing.T, ns, pod string) string {
	t.Helper()
	for {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil {
			return p.Status.ContainerStatuses[0].ContainerID
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s is not running: %+v", pod, p.Status)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitAllocatable(ctx context.Context, t *testing.T, want int64) {
	t.Helper()
	for {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, c.RealNodeName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := n.Status.Allocatable[corev1.ResourceName(contract.ResourceGPU)]
		if got.Value() == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %s allocatable %s = %s, want %d (%d mock GPUs × split %d)", n.Name, contract.ResourceGPU, got.String(), want, mockGPUs, splitCount)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Rolling updates of the device plugin. An ordinary one (a new pod
// template) keeps running GPU containers and their limits. One to a
// --host-root that differs from the DaemonSet's hostPath must fail clearly,
// naming the path (at the plugin's start, or at Allocate), instead of
// starting containers in which the runtime made empty directories of the
// missing paths and libvgpu is silently absent. Applying the overlay again
// rolls back.
func TestRollingUpdatesOfTheDevicePlugin(t *testing.T) {
	installed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const ns = "realnode-rolling-update"
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, workloadPod("steady", "2900"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForOutput(ctx, t, ns, "steady", "meminfo")
	before := containerID(ctx, t, ns, "steady")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := c.Kubectl(ctx, "apply", "-k", "overlay"); err != nil {
			t.Error(err)
		}
		if out, err := c.Kubectl(ctx, "-n", namespace, "rollout", "status", "daemonset/vgpu-device-plugin", "--timeout=90s"); err != nil {
			t.Errorf("rolling back the device plugin: %v\n%s", err, out)
		}
		waitAllocatable(ctx, t, mockGPUs*splitCount)
	})

	patchPlugin(ctx, t, `[{"op": "add", "path": "/spec/template/metadata/annotations", "value": {"vgpu.io/test-rollout": "1"}}]`)
	if out, err := c.Kubectl(ctx, "-n", namespace, "rollout", "status", "daemonset/vgpu-device-plugin", "--timeout=90s"); err != nil {
		t.Fatalf("rolling update of the device plugin: %v\n%s", err, out)
	}
	waitAllocatable(ctx, t, mockGPUs*splitCount)
	if after := containerID(ctx, t, ns, "steady"); after != before {
		t.Errorf("the running GPU container was replaced by the device plugin's rolling update: %s -> %s", before, after)
	}
	metrics := monitorMetricsOf(ctx, t, ns, "steady")
	holdsItsLimit(t, metrics, "steady", "the rolling update")

	const wrong = "/var/lib/vgpu-not-mounted"
	patchPlugin(ctx, t, `[{"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--host-root=`+wrong+`"}]`)
	for {
		pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=vgpu-device-plugin"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			if logs := podLogs(namespace, p.Name, "device-plugin"); strings.Contains(logs, wrong) && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount > 0 {
				t.Logf("the device plugin refuses --host-root=%s at start: %s", wrong, lastLine(logs))
				return
			}
		}
		if ds, err := c.Client.AppsV1().DaemonSets(namespace).Get(ctx, "vgpu-device-plugin", metav1.GetOptions{}); err == nil &&
			ds.Status.ObservedGeneration >= ds.Generation && ds.Status.UpdatedNumberScheduled == 1 && ds.Status.NumberAvailable == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the device plugin with a mismatched --host-root neither ran nor failed")
		case <-time.After(time.Second):
		}
	}
	// It runs: then Allocate must refuse.
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, workloadPod("mismatch", "2900", "200"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "mismatch", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		switch p.Status.Phase {
		case corev1.PodFailed:
			if !strings.Contains(p.Status.Message, wrong) {
				t.Errorf("pod mismatch failed without naming the missing host path %s: %s: %s", wrong, p.Status.Reason, p.Status.Message)
			}
			return
		case corev1.PodRunning, corev1.PodSucceeded:
			logs, _ := c.Client.CoreV1().Pods(ns).GetLogs("mismatch", &corev1.PodLogOptions{Container: "cuda"}).DoRaw(ctx)
			t.Fatalf("pod mismatch started although the device plugin's host paths (%s) are not the DaemonSet's hostPath; its output:\n%s", wrong, logs)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod mismatch neither failed nor started: %+v", p.Status)
		case <-time.After(time.Second):
		}
	}
}

func patchPlugin(ctx context.Context, t *testing.T, patch string) {
	t.Helper()
	if _, err := c.Kubectl(ctx, "-n", namespace, "patch", "daemonset", "vgpu-device-plugin", "--type=json", "-p", patch); err != nil {
		t.Fatal(err)
	}
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}
