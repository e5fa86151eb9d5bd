// Package e2e holds end-to-end tests against a local control plane
// (test/cluster). They skip unless VGPU_E2E=1; `make test-e2e` builds the
// binaries and sets it.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/gpunode"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

// TestClusterSchedulesGPUPods is the harness's acceptance test: the real
// scheduler places 20 single-GPU pods on 4 simulated GPU nodes, kwok runs
// them, and stopping the cluster leaves no process behind.
func TestClusterSchedulesGPUPods(t *testing.T) {
	c := cluster.Run(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	names, err := gpunode.Create(ctx, c.Client, gpunode.Spec{Count: 4, GPUs: 2, Model: gpunode.H100_80GB, SplitCount: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitForNodesReady(ctx, names...); err != nil {
		t.Fatal(err)
	}
	node, err := c.Client.CoreV1().Nodes().Get(ctx, names[0], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := annotation.DecodeDevices(node.Annotations[contract.AnnotationDevices])
	if err != nil {
		t.Fatalf("node %s: %v", node.Name, err)
	}
	if len(inv.GPUs) != 2 || inv.GPUs[0].Model != "NVIDIA H100 80GB HBM3" || inv.GPUs[0].MemoryMiB != 81920 {
		t.Fatalf("node %s inventory = %+v, want 2 × NVIDIA H100 80GB HBM3 with 81920 MiB", node.Name, inv)
	}
	if got := node.Status.Allocatable[contract.ResourceGPU]; got.Value() != 6 {
		t.Fatalf("node %s allocatable %s = %s, want 6 (2 GPUs × split 3)", node.Name, contract.ResourceGPU, got.String())
	}

	const ns, pods = "e2e-harness", 20
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	for i := range pods {
		if err := createPod(ctx, c, ns, fmt.Sprintf("gpu-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	running, err := c.WaitForPods(ctx, ns, "app=harness", pods, cluster.PodRunning)
	if err != nil {
		t.Fatal(err)
	}
	// 4 nodes × 6 vGPU slots = 24 ≥ 20: the scheduler spreads, never
	// overfills a node.
	perNode := map[string]int{}
	for _, p := range running {
		perNode[p.Spec.NodeName]++
	}
	for n, k := range perNode {
		if k > 6 {
			t.Errorf("node %s got %d pods, but it has only 6 %s", n, k, contract.ResourceGPU)
		}
	}

	pids := c.PIDs()
	for _, comp := range []string{"etcd", "kube-apiserver", "kube-scheduler", "kwok"} {
		if pids[comp] == 0 {
			t.Errorf("component %s not running: %v", comp, pids)
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for comp, pid := range pids {
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Errorf("%s (pid %d) still exists after Stop (kill 0: %v)", comp, pid, err)
		}
	}
	if left := cluster.ProcessesUsing(c.Dir); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
}

// TestClusterStartFailsClearly: a missing binary is named in the error.
func TestClusterStartFailsClearly(t *testing.T) {
	if os.Getenv(cluster.EnvE2E) != "1" {
		t.Skip("end-to-end test: set VGPU_E2E=1")
	}
	bins, err := cluster.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	bins.Scheduler = "/nonexistent/kube-scheduler"
	dir := t.TempDir()
	_, err = cluster.Start(context.Background(), cluster.Options{Dir: dir, Binaries: &bins})
	if err == nil {
		t.Fatal("Start with a missing kube-scheduler succeeded")
	}
	t.Logf("error: %v", err)
	for _, want := range []string{"kube-scheduler", "/nonexistent/kube-scheduler"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if left := cluster.ProcessesUsing(dir); len(left) > 0 {
		t.Errorf("failed Start left processes behind: %v", left)
	}
}

func createPod(ctx context.Context, c *cluster.Cluster, ns, name string) error {
	_, err := c.Client.CoreV1().Pods(ns).Create(ctx, testutil.Pod(name, testutil.Namespace(ns), testutil.Labels(map[string]string{"app": "harness"}),
		testutil.Container("cuda", contract.ResourceGPU, "1")), metav1.CreateOptions{})
	return err
}

// envCrashMode makes TestCrashingHelper start a cluster in the folder named
// by envCrashDir and then end the test binary abruptly.
const (
	envCrashMode = "VGPU_E2E_CRASH_MODE"
	envCrashDir  = "VGPU_E2E_CRASH_DIR"
)

// TestNoProcessLeftWhenTheTestDies runs a test binary that starts a cluster
// and then panics (t.Cleanup stops the cluster) or is SIGKILLed (nothing
// runs; the components' parent-death signal must take them down).
func TestNoProcessLeftWhenTheTestDies(t *testing.T) {
	if os.Getenv(cluster.EnvE2E) != "1" {
		t.Skip("end-to-end test: set VGPU_E2E=1")
	}
	for _, mode := range []string{"panic", "sigkill"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashingHelper$", "-test.v")
			cmd.Env = append(os.Environ(), envCrashMode+"="+mode, envCrashDir+"="+dir)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("helper test binary exited cleanly; output:\n%s", out)
			}
			if !strings.Contains(string(out), "cluster up, crashing") {
				t.Fatalf("helper never got a cluster up (%v); output:\n%s", err, out)
			}
			var left []string
			deadline := time.Now().Add(10 * time.Second)
			for {
				if left = cluster.ProcessesUsing(dir); len(left) == 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if len(left) > 0 {
				t.Fatalf("after the test binary died (%s), processes are left: %v", mode, left)
			}
		})
	}
}

// TestCrashingHelper is the child of TestNoProcessLeftWhenTheTestDies.
func TestCrashingHelper(t *testing.T) {
	mode, dir := os.Getenv(envCrashMode), os.Getenv(envCrashDir)
	if mode == "" {
		t.Skip("helper for TestNoProcessLeftWhenTheTestDies")
	}
	c := cluster.Run(t, cluster.Options{Dir: dir})
	fmt.Printf("cluster up, crashing: %v\n", c.PIDs())
	if mode == "sigkill" {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	panic("crash with a running cluster")
}
