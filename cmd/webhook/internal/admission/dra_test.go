package admission

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"

	"github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/dra"
)

type fakeTemplates struct {
	made map[string]resourcev1.ResourceClaimSpec
	err  error
}

func (f *fakeTemplates) Ensure(_ context.Context, ns, name string, spec resourcev1.ResourceClaimSpec) error {
	if f.err != nil {
		return f.err
	}
	f.made[ns+"/"+name] = spec
	return nil
}

type fixedModels []dra.Model

func (m fixedModels) Models() []dra.Model { return m }

func draReviewer(models ...dra.Model) (*Reviewer, *fakeTemplates) {
	ft := &fakeTemplates{made: map[string]resourcev1.ResourceClaimSpec{}}
	return &Reviewer{SchedulerName: "vgpu-scheduler", Capacity: fixedCapacity{81920, true},
		DRA: &DRA{Templates: ft, Models: fixedModels(models)}}, ft
}

func TestDRAModeTurnsLimitsIntoClaims(t *testing.T) {
	r, ft := draReviewer(dra.Model{Name: "A100", MemoryMiB: 40960})
	pod := admitted(nil, testutil.InitContainer("init", "nvidia.com/gpumem-percentage", "50"), testutil.Container("a", "nvidia.com/gpu", "2", "nvidia.com/gpumem", "1000", "nvidia.com/gpucores", "30", "cpu", "1"), testutil.Container("plain", "cpu", "1"))
	resp, out := r.Review(admissionRequest(t, pod), true)
	if out != Patched {
		t.Fatalf("outcome %s (%v): want patched", out, resp.Result)
	}
	got := applied(t, pod, resp)
	if got.Spec.SchedulerName != DefaultScheduler {
		t.Errorf("scheduler %q: the stock scheduler places DRA pods", got.Spec.SchedulerName)
	}
	if len(got.Spec.ResourceClaims) != 2 || len(ft.made) != 2 {
		t.Fatalf("pod claims %+v, templates %v: want one per vGPU container", got.Spec.ResourceClaims, ft.made)
	}
	byName := map[string]string{}
	for _, c := range got.Spec.ResourceClaims {
		byName[c.Name] = *c.ResourceClaimTemplateName
	}
	a := got.Spec.Containers[0]
	if len(a.Resources.Claims) != 1 || a.Resources.Claims[0].Name != "vgpu-a" {
		t.Fatalf("container a claims %+v", a.Resources.Claims)
	}
	for _, rl := range []corev1.ResourceList{a.Resources.Limits, a.Resources.Requests} {
		for name := range rl {
			if strings.HasPrefix(string(name), "nvidia.com/") {
				t.Errorf("%s left on the container: kube-scheduler would look for it on nodes", name)
			}
		}
		if _, ok := rl["cpu"]; !ok {
			t.Error("other resources must stay")
		}
	}
	spec := ft.made["team/"+byName["vgpu-a"]]
	e := spec.Devices.Requests[0].Exactly
	if e == nil || e.Count != 2 {
		t.Fatalf("claim of a: %+v", spec)
	}
	if m := e.Capacity.Requests[dra.CapMemory]; m.Value() != 1000<<20 {
		t.Errorf("memory %v: want 1000Mi", m)
	}
	if len(spec.Devices.Constraints) != 1 {
		t.Error("gpu: 2 must land on two GPUs (distinct constraint)")
	}
	init := ft.made["team/"+byName["vgpu-init"]]
	if alts := init.Devices.Requests[0].FirstAvailable; len(alts) != 1 {
		t.Errorf("percentage: %+v: want one alternative for the one model", init.Devices.Requests[0])
	} else if m := alts[0].Capacity.Requests[dra.CapMemory]; m.Value() != 20480<<20 {
		t.Errorf("50%% of an A100: %v", m)
	}
	if ic := got.Spec.InitContainers[0]; len(ic.Resources.Claims) != 1 || ic.Resources.Claims[0].Name != "vgpu-init" {
		t.Errorf("init container claims %+v", ic.Resources.Claims)
	}
	if pc := got.Spec.Containers[1]; len(pc.Resources.Claims) != 0 {
		t.Errorf("plain container got claims %+v", pc.Resources.Claims)
	}
	// The validating webhook sees the final pod: nothing of vgpu's left to check.
	if _, out := r.Review(admissionRequest(t, got), false); out != Ignored {
		t.Errorf("final pod: validating outcome %s", out)
	}
}

func TestDRAModeKeepsValidationAndMessages(t *testing.T) {
	r, ft := draReviewer()
	ext := &Reviewer{SchedulerName: "vgpu-scheduler", Capacity: fixedCapacity{81920, true}}
	for _, pod := range []*corev1.Pod{
		admitted(nil, testutil.Container("app", "nvidia.com/gpucores", "101")),
		admitted(nil, testutil.Container("app", "nvidia.com/gpumem", "1000", "nvidia.com/gpumem-percentage", "10")),
		admitted(nil, testutil.Container("app", "nvidia.com/gpumem", "90000")),
	} {
		resp, out := r.Review(admissionRequest(t, pod), true)
		want, _ := ext.Review(admissionRequest(t, pod), true)
		if out != Denied || resp.Result.Message != want.Result.Message {
			t.Errorf("DRA mode: %s %v; extender mode says %q", out, resp.Result, want.Result.Message)
		}
	}
	if len(ft.made) != 0 {
		t.Errorf("templates made for denied pods: %v", ft.made)
	}
	// A percentage needs the published models.
	resp, out := r.Review(admissionRequest(t, admitted(nil, testutil.Container("app", "nvidia.com/gpumem-percentage", "10"))), true)
	if out != Denied || !strings.Contains(resp.Result.Message, `pod team/p: container "app": gpumem-percentage: no node has published`) {
		t.Errorf("%s %v", out, resp.Result)
	}
}

func TestDRAModeDryRunCreatesNothingAndErrorsDeny(t *testing.T) {
	r, ft := draReviewer()
	pod := admitted(nil, testutil.Container("app", "nvidia.com/gpumem", "1000"))
	req := admissionRequest(t, pod)
	dry := true
	req.DryRun = &dry
	if _, out := r.Review(req, true); out != Patched || len(ft.made) != 0 {
		t.Errorf("dry run: %s, templates %v: want patched and nothing created", out, ft.made)
	}
	ft.err = errors.New("forbidden")
	resp, out := r.Review(admissionRequest(t, pod), true)
	if out != Denied || !strings.Contains(resp.Result.Message, "ResourceClaimTemplate team/vgpu-") || !strings.Contains(resp.Result.Message, "forbidden") {
		t.Errorf("%s %v", out, resp.Result)
	}
}

func TestDRAModeSameRequestSharesTemplate(t *testing.T) {
	r, ft := draReviewer()
	for _, name := range []string{"x", "y"} {
		pod := admitted(func(p *corev1.Pod) { p.Name = name }, testutil.Container(name, "nvidia.com/gpumem", "1000"))
		if _, out := r.Review(admissionRequest(t, pod), true); out != Patched {
			t.Fatal(out)
		}
	}
	if len(ft.made) != 1 {
		t.Errorf("templates %v: two pods asking the same share one template", ft.made)
	}
	if n := claimName(strings.Repeat("c", 63)); len(n) > 63 {
		t.Errorf("claim name %q longer than a DNS label", n)
	}
}

func TestDRAModeRoutesToTheDRASchedulerWhenSet(t *testing.T) {
	r, _ := draReviewer(dra.Model{Name: "A100", MemoryMiB: 40960})
	r.DRA.SchedulerName = "gpu-dra"
	for _, tc := range []struct{ named, want string }{
		{"", "gpu-dra"},
		{DefaultScheduler, "gpu-dra"},
		{"my-scheduler", "my-scheduler"}, // a pod that names a scheduler keeps it
	} {
		pod := admitted(func(p *corev1.Pod) { p.Spec.SchedulerName = tc.named }, testutil.Container("a", "nvidia.com/gpumem", "1000"))
		resp, out := r.Review(admissionRequest(t, pod), true)
		if out != Patched {
			t.Fatalf("outcome %s (%v): want patched", out, resp.Result)
		}
		if got := applied(t, pod, resp).Spec.SchedulerName; got != tc.want {
			t.Errorf("pod naming %q: scheduler %q, want %q", tc.named, got, tc.want)
		}
	}
}
