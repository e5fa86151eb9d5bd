// Package realnode installs vgpu as a user does, with `kubectl apply -k`, on
// the harness's one real node (containerd and the real kubelet,
// test/cluster's RealNodeOptions) from the images `make images` built, and
// checks it in real containers. One cluster serves the package; TestMain
// compares the host before and after it.
package realnode

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	if os.Getenv(envKilledChild) != "" {
		return killedChild(archives)
	}
	snap := time.Now()
	before, err := cluster.SnapshotHost()
	if err != nil {
		fmt.Println("realnode: host state:", err)
		return 1
	}
	fmt.Printf("realnode: host state recorded in %s (after any other real node stopped)\n", time.Since(snap).Round(time.Millisecond))
	// A node whose test was killed leaves the host changed; the next
	// start restores it from the journal (checked at the end, against
	// before).
	if err := startAndKill(); err != nil {
		fmt.Println("realnode:", err)
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
	removing := time.Now()
	if code == 0 && !uninstalled() {
		code = 1
	}
	fmt.Printf("realnode: uninstalled in %s\n", time.Since(removing).Round(time.Millisecond))
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
				return fmt.Sprintf("pod %s container %s restarted %d times (%s); its output:\n%s", p.Name, s.Name, s.RestartCount, s.LastTerminationState.Terminated.Reason, podLogs(namespace, p.Name, s.Name))
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
	waitAllocatable(ctx, t, mockGPUs*splitCount)
}

var (
	installOnce sync.Once
	installErr  error
)

// envKilledChild runs this test binary as a real node that its parent kills.
const envKilledChild = "VGPU_REALNODE_KILLED_CHILD"

// killedChild starts a real node, runs a pod on it, says "up", and waits to
// be killed with SIGKILL, which leaves its host changes behind.
func killedChild(archives []string) int {
	dir, _ := os.MkdirTemp("", "vgpu-real-killed-")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Dir: dir, RealNode: &cluster.RealNodeOptions{Images: archives, PauseImage: pauseImage}})
	if err != nil {
		fmt.Println("start:", err)
		return 1
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "left-behind", Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "pause", Image: pauseImage}}},
	}
	if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		fmt.Println("pod:", err)
		return 1
	}
	if _, err := c.WaitForPods(ctx, "default", "", 1, cluster.PodRunning); err != nil {
		fmt.Println("pod:", err)
		return 1
	}
	fmt.Println("up")
	time.Sleep(10 * time.Minute)
	return 1
}

// startAndKill runs killedChild and kills it with SIGKILL once its pod runs.
func startAndKill() error {
	start := time.Now()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envKilledChild+"=1")
	cmd.Stderr = cmd.Stdout
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		return err
	}
	up := make(chan bool, 1)
	var lines []string
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "up" {
				up <- true
				return
			}
			lines = append(lines, sc.Text())
		}
		up <- false
	}()
	select {
	case ok := <-up:
		if !ok {
			_ = cmd.Wait()
			return fmt.Errorf("the real node to be killed did not come up:\n%s", strings.Join(lines, "\n"))
		}
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return errors.New("the real node to be killed did not come up in 3 minutes")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_ = cmd.Wait()
	fmt.Printf("realnode: a real node with a running pod killed with SIGKILL after %s; the next start restores the host\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// uninstalled removes vgpu with kubectl delete -k, as a user does, and
// checks that nothing of it is left on the node: no pod, and vgpu's host
// directory holds no container's region.
func uninstalled() bool {
	if installErr != nil || c == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The GPU workloads go first, while the monitor still runs to remove
	// their regions; then vgpu itself.
	for _, ns := range []string{"realnode-workload", "realnode-kubelet-restart", "realnode-plugin-deleted", "realnode-rolling-update", "realnode-dra"} {
		_ = c.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	}
	for {
		pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app=realnode-workload"})
		regions, _ := filepath.Glob("/var/lib/vgpu/containers/*")
		if err == nil && len(pods.Items) == 0 && len(regions) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			fmt.Printf("realnode: FAIL: with the GPU pods deleted (%d left), the monitor left region directories on the node: %v\n", len(pods.Items), regions)
			return false
		case <-time.After(time.Second):
		}
	}
	if _, err := c.Kubectl(ctx, "delete", "-k", "overlay", "--wait=true"); err != nil {
		fmt.Println("realnode: FAIL: kubectl delete -k:", err)
		return false
	}
	for {
		pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err == nil && len(pods.Items) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			fmt.Printf("realnode: FAIL: pods left after kubectl delete -k: %v\n", err)
			return false
		case <-time.After(time.Second):
		}
	}
	left, _ := filepath.Glob("/var/lib/vgpu/containers/*")
	if len(left) > 0 {
		fmt.Printf("realnode: FAIL: after kubectl delete -k, region directories are left on the node: %v\n", left)
		return false
	}
	fmt.Println("realnode: GPU pods deleted, then kubectl delete -k: no pod and no region directory left on the node")
	// What the device plugin installed stays: nothing of vgpu runs on the
	// node any more to remove it (docs/install.md#uninstall).
	if rest, _ := filepath.Glob("/var/lib/vgpu/*/*"); len(rest) > 0 {
		fmt.Printf("realnode: note: left in /var/lib/vgpu after kubectl delete -k: %v\n", rest)
	}
	return true
}

// podLogs reads the kubelet's log files of a container, every run of it
// (the API keeps only the last two).
func podLogs(ns, pod, container string) string {
	files, _ := filepath.Glob(filepath.Join("/var/log/pods", ns+"_"+pod+"_*", container, "*.log"))
	var logs []byte
	for _, f := range files {
		b, _ := os.ReadFile(f)
		logs = append(logs, b...)
	}
	return string(logs)
}
