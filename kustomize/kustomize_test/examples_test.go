package kustomizetest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/request"
)

// largestDemoGPU is the memory of the largest GPU of `make demo`'s cluster
// (A100 80GB), in MiB.
const largestDemoGPU = 81920

func examplePods(t *testing.T, objs []object) []*corev1.Pod {
	t.Helper()
	pods := all[*corev1.Pod](objs)
	if len(pods) != len(objs) {
		t.Fatalf("examples hold %s; want Pods only (the demo's cluster runs no controllers)", keys(objs))
	}
	return pods
}

// The sample workloads are valid vgpu requests, as the webhook checks them
// (lib/request), and each fits the demo's GPUs.
func TestExamplesAreValidRequests(t *testing.T) {
	pods := examplePods(t, renderAbs(t, filepath.Join(root(), "..", "examples")))
	seen := map[string]bool{}
	for _, pod := range pods {
		p, err := request.FromPod(pod)
		if err != nil {
			t.Errorf("example pod %s: %v", pod.Name, err)
			continue
		}
		if err := request.CheckMemoryFits(p, largestDemoGPU); err != nil {
			t.Errorf("example pod %s: %v", pod.Name, err)
		}
		if pod.Spec.SchedulerName != "" {
			t.Errorf("example pod %s sets schedulerName; the webhook sets it", pod.Name)
		}
		for _, c := range pod.Spec.Containers {
			for r := range c.Resources.Limits {
				seen[string(r)] = true
			}
		}
	}
	// Between them they show every way to ask for a GPU.
	for _, r := range contract.Resources {
		if !seen[r] {
			t.Errorf("no example asks for %s", r)
		}
	}
}

// The denied example is refused, with a message that names the container,
// the resource and the limit.
func TestDeniedExampleIsDenied(t *testing.T) {
	dir := filepath.Join(root(), "..", "examples", "denied")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, pod := range examplePods(t, decodeAll(t, b)) {
			p, err := request.FromPod(pod)
			if err == nil {
				err = request.CheckMemoryFits(p, largestDemoGPU)
			}
			if err == nil || errors.Is(err, request.ErrNoGPU) {
				t.Errorf("%s: pod %s is not denied (%v)", e.Name(), pod.Name, err)
				continue
			}
			for _, want := range []string{pod.Spec.Containers[0].Name, contract.ResourceMemory} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s: denial %q does not name %q", e.Name(), err, want)
				}
			}
		}
	}
}
