package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/test/daemons"
)

const (
	workloadImage = "localhost/vgpu-test/workload:v1"
	// The fake driver's memory: the overlay's mock A30 has 24 GiB.
	a30MiB = "24576"
)

var oneSecond int64 = 1

// workloadPod is a GPU pod as the seed writes it: one vGPU, 3000 MiB, 30 %
// of the SMs; its program allocates each size in args and holds the memory.
func workloadPod(name string, args ...string) *corev1.Pod {
	lim := corev1.ResourceList{
		contract.ResourceGPU:  resource.MustParse("1"),
		"nvidia.com/gpumem":   resource.MustParse("3000"),
		"nvidia.com/gpucores": resource.MustParse("30"),
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "realnode-workload"}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			// The program is the container's PID 1, which SIGTERM does not
			// end, and has nothing to save: the pod goes in a second, not
			// after 30 s, when a test deletes it.
			TerminationGracePeriodSeconds: &oneSecond,
			Containers: []corev1.Container{{
				Name:      "cuda",
				Image:     workloadImage,
				Args:      args,
				Env:       []corev1.EnvVar{{Name: "FAKE_CUDA_MEM_MIB", Value: a30MiB}},
				Resources: corev1.ResourceRequirements{Limits: lim},
			}},
		},
	}
}

// Inside a real container started by containerd, libvgpu is loaded and
// enforces the pod's 3000 MiB: 2900 MiB succeed, 200 MiB more fail with
// out-of-memory, and cuMemGetInfo reports the limit. The region is on the
// host, the monitor exports the container's usage and `vgpuctl describe
// node --usage` shows it. A second pod on the node gets its own limit.
func TestWorkloadLimitEnforcedInARealContainer(t *testing.T) {
	installed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "realnode-workload"
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	first, err := c.Client.CoreV1().Pods(ns).Create(ctx, workloadPod("first", "2900", "200"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the pod as the seed writes it: %v", err)
	}
	second, err := c.Client.CoreV1().Pods(ns).Create(ctx, workloadPod("second", "3100", "2000"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := waitForOutput(ctx, t, ns, first.Name, "meminfo")
	for _, want := range []string{"alloc 2900 ok", "alloc 200 oom", "total=3000"} {
		if !strings.Contains(out, want) {
			t.Errorf("pod %s: output lacks %q: libvgpu does not enforce 3000 MiB in the container:\n%s", first.Name, want, out)
		}
	}
	out2 := waitForOutput(ctx, t, ns, second.Name, "meminfo")
	for _, want := range []string{"alloc 3100 oom", "alloc 2000 ok", "total=3000"} {
		if !strings.Contains(out2, want) {
			t.Errorf("pod %s: output lacks %q: the second pod does not get its own 3000 MiB:\n%s", second.Name, want, out2)
		}
	}

	// Allocate is not told which pod it serves (docs/contract.md): each
	// container must still get its own pod's region directory.
	for _, name := range []string{first.Name, second.Name} {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		env, mounts := containerSpec(ctx, t, p, "cuda")
		region := env[contract.EnvRegion]
		host := mounts[filepath.Dir(region)]
		if want := string(p.UID) + "_cuda"; filepath.Base(host) != want {
			t.Errorf("pod %s (uid %s): its container's %s=%s is in %s on the host, not in its own region directory %s",
				name, p.UID, contract.EnvRegion, region, host, want)
		}
	}

	pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, first.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	region := filepath.Join("/var/lib/vgpu/containers", string(pod.UID)+"_cuda")
	entries, err := os.ReadDir(region)
	if err != nil || len(entries) == 0 {
		t.Errorf("the container's region directory %s on the host: %v (entries %v)", region, err, entries)
	}

	// The monitor pod's metrics, at its pod IP, as Prometheus scrapes them.
	metrics := monitorMetricsOf(ctx, t, ns, "first")
	if used := metricValue(t, metrics, "vgpu_container_memory_used_bytes", `pod="first"`); used != 2900<<20 {
		t.Errorf("monitor: vgpu_container_memory_used_bytes of pod first = %v, want 2900 MiB (%d)\n%s", used, 2900<<20, grep(metrics, "vgpu_container"))
	}

	bin, err := daemons.Binary("vgpuctl")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := exec.CommandContext(ctx, bin, "describe", "node", c.RealNodeName(), "--usage", "--kubeconfig", c.Kubeconfig).CombinedOutput()
	fmt.Printf("realnode: vgpuctl describe node %s --usage:\n%s", c.RealNodeName(), desc)
	if err != nil {
		t.Fatalf("vgpuctl describe node --usage: %v\n%s", err, desc)
	}
	if !strings.Contains(string(desc), "first") || !strings.Contains(string(desc), "2900") {
		t.Errorf("vgpuctl describe node --usage shows neither pod first nor its 2900 MiB in use:\n%s", desc)
	}
}

func waitForOutput(ctx context.Context, t *testing.T, ns, pod, marker string) string {
	t.Helper()
	for {
		out, err := c.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: "cuda"}).DoRaw(ctx)
		if err == nil && strings.Contains(string(out), marker) {
			return string(out)
		}
		select {
		case <-ctx.Done():
			p, _ := c.Client.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
			t.Fatalf("pod %s printed no %q: %v; output %q; status %+v", pod, marker, err, out, p.Status)
		case <-time.After(time.Second):
		}
	}
}

// monitorMetricsOf scrapes the monitor pod at its pod IP, as Prometheus
// does, until it reports the usage of the pod ns/pod.
func monitorMetricsOf(ctx context.Context, t *testing.T, ns, pod string) string {
	t.Helper()
	label := fmt.Sprintf(`namespace=%q,node=%q,pod=%q`, ns, c.RealNodeName(), pod)
	var body string
	for {
		body = monitorScrape(ctx, t)
		if strings.Contains(body, label) && strings.Contains(body, "vgpu_container_memory_used_bytes{") {
			return body
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the monitor exports no usage of pod %s/%s:\n%s", ns, pod, grep(body, "vgpu_"))
		case <-time.After(time.Second):
		}
	}
}

// monitorScrape is the monitor pod's metrics, read once at its pod IP, or
// "" while there is no single monitor pod that answers.
func monitorScrape(ctx context.Context, t *testing.T) string {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=vgpu-monitor"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.PodIP == "" {
		return ""
	}
	resp, err := http.Get("http://" + pods.Items[0].Status.PodIP + ":9394/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue is the value of the sample of name whose labels contain label.
func metricValue(t *testing.T, metrics, name, label string) float64 {
	t.Helper()
	v, ok := sample(metrics, name, label)
	if !ok {
		t.Errorf("no sample of %s with %s", name, label)
		return -1
	}
	return v
}

// sample is the value of the sample of name whose labels contain label, if
// there is one that parses.
func sample(metrics, name, label string) (float64, bool) {
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, name+"{") && strings.Contains(l, label) {
			f := strings.Fields(l)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// containerSpec is the environment containerd started a container with
// (the pod's own and what Allocate returned) and its mounts, destination to
// host source.
func containerSpec(ctx context.Context, t *testing.T, p *corev1.Pod, container string) (env, mounts map[string]string) {
	t.Helper()
	for _, st := range p.Status.ContainerStatuses {
		if st.Name != container {
			continue
		}
		out, err := c.Ctr(ctx, "containers", "info", strings.TrimPrefix(st.ContainerID, "containerd://"))
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			Spec struct {
				Process struct {
					Env []string `json:"env"`
				} `json:"process"`
				Mounts []struct {
					Destination string `json:"destination"`
					Source      string `json:"source"`
				} `json:"mounts"`
			} `json:"Spec"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("ctr containers info: %v", err)
		}
		env, mounts = map[string]string{}, map[string]string{}
		for _, kv := range info.Spec.Process.Env {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		for _, m := range info.Spec.Mounts {
			mounts[m.Destination] = m.Source
		}
		return env, mounts
	}
	t.Fatalf("pod %s has no container %s", p.Name, container)
	return nil, nil
}
