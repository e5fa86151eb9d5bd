// Package realnode installs vgpu as a user does, with `kubectl apply -k`, on
// the harness's one real node (containerd and the real kubelet,
// test/cluster's RealNodeOptions) from the images `make images` built, and
// checks it in real containers. One cluster serves the package; TestMain
// compares the host before and after it.
package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/test/cluster"
)

// EnvImagesDir is where `make images` left the archives (make test-e2e sets it).
const EnvImagesDir = "VGPU_IMAGES_DIR"

const (
	pauseImage = "localhost/vgpu-test/pause:v1"
	namespace  = "vgpu-system"
	// The overlay's --nvml=mock:a30:2 and the base's deviceSplitCount.
	mockGPUs, splitCount = 2, 10
)

var c *cluster.Cluster

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Getenv(cluster.EnvE2E) != "1" {
		fmt.Println("realnode: skipped: end-to-end test, set VGPU_E2E=1 (make test-e2e does)")
		return 0
	}
	if why := cluster.RealNodeUnavailable(); why != "" {
		fmt.Println("realnode: skipped:", why)
		return 0
	}
	archives, _ := filepath.Glob(filepath.Join(os.Getenv(EnvImagesDir), "*.tar"))
	if len(archives) == 0 {
		fmt.Printf("realnode: no image archives in $%s=%q: run make images (make test-e2e does)\n", EnvImagesDir, os.Getenv(EnvImagesDir))
		return 1
	}
	before, err := cluster.SnapshotHost()
	if err != nil {
		fmt.Println("realnode: host state:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "vgpu-real-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err = cluster.Start(ctx, cluster.Options{
		Dir:      dir,
		Logf:     func(f string, a ...any) { fmt.Printf("realnode: "+f+"\n", a...) },
		RealNode: &cluster.RealNodeOptions{Images: archives, PauseImage: pauseImage},
	})
	if err != nil {
		fmt.Println("realnode: start:", err)
		return 1
	}
	fmt.Printf("realnode: cluster with real node %s up in %s\n", c.RealNodeName(), time.Since(start).Round(time.Millisecond))
	code := m.Run()
	if code != 0 {
		var b strings.Builder
		c.Dump(context.Background(), &b)
		fmt.Println(b.String())
		fmt.Println("realnode: logs kept in", dir)
	}
	stopped := time.Now()
	if err := c.Stop(); err != nil {
		fmt.Println("realnode: stop:", err)
		code = 1
	}
	fmt.Printf("realnode: stopped and host restored in %s\n", time.Since(stopped).Round(time.Millisecond))
	after, err := cluster.SnapshotHost()
	if err != nil {
		fmt.Println("realnode: host state:", err)
		return 1
	}
	if d := cluster.HostDiff(before, after); len(d) > 0 {
		fmt.Printf("realnode: FAIL: the host differs after the real node stopped:\n  %s\n", strings.Join(d, "\n  "))
		return 1
	}
	fmt.Println("realnode: host state after stop equals the state before (sysctls, iptables, devices, cgroups, mounts, paths)")
	if code == 0 {
		os.RemoveAll(dir)
	}
	return code
}

// installed applies the test overlay once, as a user would, and waits until
// every vgpu Deployment and DaemonSet is Ready on the real node.
func installed(t *testing.T) {
	t.Helper()
	installOnce.Do(func() { installErr = install() })
	if installErr != nil {
		t.Fatal(installErr)
	}
}

func install() error {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	node := c.RealNodeName()
	if _, err := c.Kubectl(ctx, "label", "node", node, "vgpu.io/gpu-node=true", "--overwrite"); err != nil {
		return err
	}
	start := time.Now()
	if out, err := c.Kubectl(ctx, "apply", "-k", "overlay"); err != nil {
		return err
	} else {
		fmt.Print(out)
	}
	for {
		notReady, err := workloadsNotReady(ctx)
		if err != nil {
			return err
		}
		if crash := crashing(ctx); crash != "" {
			return fmt.Errorf("after kubectl apply -k: %s", crash)
		}
		if len(notReady) == 0 {
			fmt.Printf("realnode: every vgpu Deployment and DaemonSet Ready %s after kubectl apply -k\n", time.Since(start).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			pods, _ := c.Kubectl(context.Background(), "get", "pods", "-A", "-o", "wide")
			return fmt.Errorf("not Ready after kubectl apply -k: %s\n%s", strings.Join(notReady, "; "), pods)
		case <-time.After(time.Second):
		}
	}
}

func workloadsNotReady(ctx context.Context) ([]string, error) {
	var out []string
	deps, err := c.Client.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	dss, err := c.Client.AppsV1().DaemonSets(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	if len(deps.Items) == 0 || len(dss.Items) == 0 {
		return []string{"no Deployment or DaemonSet yet"}, nil
	}
	for _, d := range deps.Items {
		if !deploymentReady(&d) {
			out = append(out, fmt.Sprintf("Deployment %s: %d/%d ready", d.Name, d.Status.ReadyReplicas, replicas(&d)))
		}
	}
	for _, d := range dss.Items {
		if d.Status.DesiredNumberScheduled < 1 || d.Status.NumberReady != d.Status.DesiredNumberScheduled {
			out = append(out, fmt.Sprintf("DaemonSet %s: %d/%d ready", d.Name, d.Status.NumberReady, d.Status.DesiredNumberScheduled))
		}
	}
	return out, nil
}

// crashing describes the first vgpu container that restarted twice, with
// its last output, or is "".
func crashing(ctx context.Context) string {
	pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return ""
	}
	for _, p := range pods.Items {
		for _, s := range p.Status.ContainerStatuses {
			if s.RestartCount >= 2 {
				// The kubelet's log files: the API only has the last two runs.
				files, _ := filepath.Glob(filepath.Join("/var/log/pods", namespace+"_"+p.Name+"_*", s.Name, "*.log"))
				var logs []byte
				for _, f := range files {
					b, _ := os.ReadFile(f)
					logs = append(logs, b...)
				}
				return fmt.Sprintf("pod %s container %s restarted %d times (%s); its output:\n%s", p.Name, s.Name, s.RestartCount, s.LastTerminationState.Terminated.Reason, logs)
			}
		}
	}
	return ""
}

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func deploymentReady(d *appsv1.Deployment) bool {
	return d.Status.ObservedGeneration >= d.Generation && d.Status.ReadyReplicas >= replicas(d) && d.Status.UpdatedReplicas >= replicas(d)
}

// Every vgpu Deployment and DaemonSet of the binpack overlay becomes Ready,
// its pods running in real containers on the real node.
func TestInstallWithKubectlApplyK(t *testing.T) {
	installed(t)
	ctx := context.Background()
	pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != c.RealNodeName() {
			t.Errorf("pod %s runs on %q, not on the real node", p.Name, p.Spec.NodeName)
		}
		for _, s := range p.Status.ContainerStatuses {
			if !strings.HasPrefix(s.ContainerID, "containerd://") || s.State.Running == nil {
				t.Errorf("pod %s container %s: %q %+v, want a running containerd container", p.Name, s.Name, s.ContainerID, s.State)
			}
		}
	}
}

// The device plugin registers with the real kubelet, which then advertises
// the vGPU slots of the mock GPUs.
func TestDevicePluginRegistersWithTheKubelet(t *testing.T) {
	installed(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := int64(mockGPUs * splitCount)
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
		case <-time.After(time.Second):
		}
	}
}

var (
	installOnce sync.Once
	installErr  error
)
