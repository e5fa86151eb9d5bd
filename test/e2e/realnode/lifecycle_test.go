package realnode

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/test/daemons"
)

// The device plugin's directories on the node (the base's hostPath).
const (
	hostLibDir     = "/var/lib/vgpu/lib"
	hostRegionsDir = "/var/lib/vgpu/containers"
)

// testNamespace creates ns and deletes it when the test ends; the GPU pods
// in it are gone before vgpu is uninstalled (uninstalled waits for them).
func testNamespace(ctx context.Context, t *testing.T, ns string) {
	t.Helper()
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
}

// libvgpu gone from the host while the device plugin runs. A runtime would
// start the container with empty directories in place of the missing mount
// sources and no libvgpu, silently. The plugin puts the library back from
// its image and the pod runs with its limit; where it cannot, the pod fails
// its admission with an error that names the missing file, nothing of it is
// left on the node, and once the host is right the next pod gets its own
// container and limit.
func TestLibvgpuMissingOnTheHost(t *testing.T) {
	installed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "realnode-libvgpu-missing"
	testNamespace(ctx, t, ns)
	current, err := filepath.EvalSymlinks(filepath.Join(hostLibDir, "current"))
	if err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(current, filepath.Base(contract.ContainerLibPath))

	if err := os.Remove(lib); err != nil {
		t.Fatal(err)
	}
	runWorkload(ctx, t, ns, "reinstalled")
	if _, err := os.Stat(lib); err != nil {
		t.Errorf("libvgpu is not back on the host: %v", err)
	}
	if logs := podLogs(namespace, pluginPod(ctx, t).Name, "device-plugin"); !strings.Contains(logs, "reinstalled it from the device plugin's image") {
		t.Errorf("the device plugin did not log that it reinstalled libvgpu:\n%s", lastLine(logs))
	}

	// The library directory cannot be written: a file stands in its place.
	if err := os.Rename(hostLibDir, hostLibDir+".held"); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if st, err := os.Lstat(hostLibDir); err == nil && st.Mode().IsRegular() {
			os.Remove(hostLibDir)
		}
		if _, err := os.Stat(hostLibDir + ".held"); err == nil {
			if err := os.Rename(hostLibDir+".held", hostLibDir); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(restore)
	if err := os.WriteFile(hostLibDir, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	refused, err := c.Client.CoreV1().Pods(ns).Create(ctx, workloadPod("refused", "2900", "200"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := waitPhase(ctx, t, ns, refused.Name, corev1.PodFailed)
	t.Logf("pod refused: %s: %s", p.Status.Reason, p.Status.Message)
	for _, want := range []string{"libvgpu is missing on the host: " + lib, "reinstalling it from the device plugin's image failed"} {
		if !strings.Contains(p.Status.Message, want) {
			t.Errorf("pod refused failed without saying %q: %s: %s", want, p.Status.Reason, p.Status.Message)
		}
	}
	if _, err := os.Stat(filepath.Join(hostRegionsDir, string(p.UID)+"_cuda")); !os.IsNotExist(err) {
		t.Errorf("the refused pod left its region directory on the node: %v", err)
	}
	if v, ok := p.Annotations[contract.AnnotationAllocated]; ok {
		t.Errorf("the refused pod is recorded as allocated: %s", v)
	}

	restore()
	runWorkload(ctx, t, ns, "after")
}

// runWorkload starts a workload pod that allocates 2900 MiB then 200 MiB, and checks
// that libvgpu enforced its 3000 MiB in its own region directory.
func runWorkload(ctx context.Context, t *testing.T, ns, name string) {
	t.Helper()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, workloadPod(name, "2900", "200"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out := waitForOutput(ctx, t, ns, name, "meminfo")
	for _, want := range []string{"alloc 2900 ok", "alloc 200 oom", "total=3000"} {
		if !strings.Contains(out, want) {
			t.Errorf("pod %s: output lacks %q: libvgpu does not enforce 3000 MiB in the container:\n%s", name, want, out)
		}
	}
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env, mounts := containerSpec(ctx, t, p, "cuda")
	if host := mounts[filepath.Dir(env[contract.EnvRegion])]; filepath.Base(host) != string(p.UID)+"_cuda" {
		t.Errorf("pod %s (uid %s) got the region directory %s, not its own", name, p.UID, host)
	}
}

func waitPhase(ctx context.Context, t *testing.T, ns, name string, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	for {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase == phase {
			return p
		}
		if p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			logs, _ := c.Client.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{Container: "cuda"}).DoRaw(ctx)
			t.Fatalf("pod %s is %s, want %s: %s; its output:\n%s", name, p.Status.Phase, phase, p.Status.Message, logs)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s is %s, want %s: %+v", name, p.Status.Phase, phase, p.Status)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func pluginPod(ctx context.Context, t *testing.T) *corev1.Pod {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=vgpu-device-plugin"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("device plugin pods: %v (%d)", err, len(pods.Items))
	}
	return &pods.Items[0]
}

// A rolling update of the monitor: the running GPU container keeps its
// limit, and the new monitor pod exports its usage and reports it enforced.
func TestRollingUpdateOfTheMonitor(t *testing.T) {
	installed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "realnode-monitor-update"
	testNamespace(ctx, t, ns)
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, workloadPod("watched", "2900"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForOutput(ctx, t, ns, "watched", "meminfo")
	before := containerID(ctx, t, ns, "watched")
	monitorMetricsOf(ctx, t, ns, "watched")
	old, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=vgpu-monitor"})
	if err != nil || len(old.Items) != 1 {
		t.Fatalf("monitor pods: %v (%d)", err, len(old.Items))
	}

	start := time.Now()
	if _, err := c.Kubectl(ctx, "-n", namespace, "patch", "daemonset", "vgpu-monitor", "--type=json", "-p",
		`[{"op": "add", "path": "/spec/template/metadata/annotations", "value": {"vgpu.io/test-rollout": "1"}}]`); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(ctx, "-n", namespace, "rollout", "status", "daemonset/vgpu-monitor", "--timeout=90s"); err != nil {
		t.Fatalf("rolling update of the monitor: %v\n%s", err, out)
	}
	t.Logf("monitor rolled out in %s", time.Since(start).Round(time.Millisecond))
	now, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=vgpu-monitor"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range now.Items {
		if p.UID == old.Items[0].UID {
			t.Fatalf("the monitor pod %s was not replaced", p.Name)
		}
	}
	if after := containerID(ctx, t, ns, "watched"); after != before {
		t.Errorf("the running GPU container was replaced by the monitor's rolling update: %s -> %s", before, after)
	}
	// The new monitor exports the container again; libvgpu may have missed
	// the utilisation feed while no monitor ran, and is enforced again once
	// it is back.
	var metrics string
	for {
		metrics = monitorMetricsOf(ctx, t, ns, "watched")
		if v, ok := sample(metrics, "vgpu_container_enforced", `pod="watched"`); ok && v == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after the monitor's rolling update, pod watched is not reported enforced:\n%s", grep(metrics, `pod="watched"`))
		case <-time.After(time.Second):
		}
	}
	holdsItsLimit(t, metrics, "watched", "the monitor's rolling update")
}

// A GPU container whose limits are set but whose region never appears: a
// static program, into which libvgpu is never loaded (the pause image's).
// After the monitor's --region-grace (the overlay's 5 s) and its
// --audit-confirm, the monitor reports it unenforced, and so does
// `vgpuctl describe node --usage`.
func TestContainerWithoutRegionIsReportedUnenforced(t *testing.T) {
	installed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns = "realnode-no-region"
	testNamespace(ctx, t, ns)
	pod := workloadPod("static", "100")
	pod.Spec.Containers[0].Image = pauseImage
	pod.Spec.Containers[0].Args = nil
	// Small enough to fit beside the other tests' pods on either GPU.
	pod.Spec.Containers[0].Resources.Limits["nvidia.com/gpumem"] = resource.MustParse("1000")
	pod.Spec.Containers[0].Resources.Limits["nvidia.com/gpucores"] = resource.MustParse("5")
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	running := containerID(ctx, t, ns, "static")
	start := time.Now()
	t.Logf("pod static (%s) runs a static program with a 1000 MiB limit, %s after it was created", running, start.Sub(created).Round(time.Millisecond))

	label := fmt.Sprintf(`namespace=%q,node=%q,pod="static"`, ns, c.RealNodeName())
	var body string
	for {
		body = monitorScrape(ctx, t)
		if strings.Contains(grep(grep(body, "vgpu_container_unenforced_info{"), label), `reason="no-region"`) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the monitor does not report pod static unenforced (no-region):\n%s", grep(body, "vgpu_container_"))
		case <-time.After(time.Second):
		}
	}
	t.Logf("reported unenforced %s after the container started:\n%s", time.Since(start).Round(time.Second), grep(body, label))
	if v := metricValue(t, body, "vgpu_container_enforced", `pod="static"`); v != 0 {
		t.Errorf("vgpu_container_enforced of pod static = %v, want 0", v)
	}

	bin, err := daemons.Binary("vgpuctl")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := exec.CommandContext(ctx, bin, "describe", "node", c.RealNodeName(), "--usage", "--kubeconfig", c.Kubeconfig).CombinedOutput()
	if err != nil {
		t.Fatalf("vgpuctl describe node --usage: %v\n%s", err, desc)
	}
	if !strings.Contains(string(desc), ns+"/static/cuda: limits NOT enforced (no-region") {
		t.Errorf("vgpuctl describe node --usage does not report pod static unenforced:\n%s", desc)
	}
	for _, l := range strings.Split(string(desc), "\n") {
		if strings.Contains(l, " static ") && !strings.HasSuffix(strings.TrimSpace(l), "NO") {
			t.Errorf("vgpuctl describe node --usage shows pod static enforced: %q", l)
		}
	}
}

// holdsItsLimit checks, in the monitor's metrics, that a workload pod that
// took 2900 MiB still has its 3000 MiB limit and its 2900 MiB after what
// happened.
func holdsItsLimit(t *testing.T, metrics, pod, after string) {
	t.Helper()
	if limit := metricValue(t, metrics, "vgpu_container_memory_limit_bytes", `pod="`+pod+`"`); limit != 3000<<20 {
		t.Errorf("after %s the limit of pod %s is %v bytes, want 3000 MiB", after, pod, limit)
	}
	if used := metricValue(t, metrics, "vgpu_container_memory_used_bytes", `pod="`+pod+`"`); used != 2900<<20 {
		t.Errorf("after %s pod %s holds %v bytes, want its 2900 MiB", after, pod, used)
	}
}
