package admission

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

type fixedCapacity struct {
	mib int64
	ok  bool
}

func (c fixedCapacity) LargestGPU() (int64, bool) { return c.mib, c.ok }

// admitted is pod team/p for the default scheduler, shaped by opts, as
// the API server hands it to admission: typed, requests defaulted from
// limits. mod, when not nil, then changes what the defaulting left.
func admitted(mod func(*corev1.Pod), opts ...testutil.PodOption) *corev1.Pod {
	p := testutil.Pod("p", append([]testutil.PodOption{testutil.Namespace("team"), testutil.Scheduler(DefaultScheduler)}, opts...)...)
	p.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			if len(cs[i].Resources.Limits) > 0 {
				cs[i].Resources.Requests = cs[i].Resources.Limits.DeepCopy()
			}
		}
	}
	if mod != nil {
		mod(p)
	}
	return p
}

func admissionRequest(t *testing.T, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		UID:       "uid-1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: pod.Namespace,
		Name:      pod.Name,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}
}

// applied returns the pod after the response's patch.
func applied(t *testing.T, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	raw, _ := json.Marshal(pod)
	if resp.Patch == nil {
		return pod
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch %s: %v", resp.Patch, err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("applying patch %s: %v", resp.Patch, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func gpuOf(c corev1.Container) (lim, req string) {
	l, okL := c.Resources.Limits["nvidia.com/gpu"]
	r, okR := c.Resources.Requests["nvidia.com/gpu"]
	if okL {
		lim = l.String()
	}
	if okR {
		req = r.String()
	}
	return lim, req
}

func TestMutate(t *testing.T) {
	priv := true
	cases := []struct {
		name      string
		pod       *corev1.Pod
		outcome   Outcome
		scheduler string
		gpu       []string // per container "limit/request" of nvidia.com/gpu after the patch
	}{
		{name: "pod without vgpu resources is untouched", pod: admitted(nil, testutil.Container("app", "cpu", "1")),
			outcome: Ignored, scheduler: DefaultScheduler, gpu: []string{"/"}},
		{name: "opted-out pod is untouched", pod: admitted(func(p *corev1.Pod) { p.Labels = map[string]string{"vgpu.io/webhook": "disabled"} },
			testutil.Container("app", "nvidia.com/gpumem", "1000")),
			outcome: Ignored, scheduler: DefaultScheduler, gpu: []string{"/"}},
		{name: "share without count gets gpu 1 and our scheduler", pod: admitted(nil, testutil.Container("app", "nvidia.com/gpumem", "1000", "nvidia.com/gpucores", "30")),
			outcome: Patched, scheduler: "vgpu-scheduler", gpu: []string{"1/1"}},
		{name: "whole GPUs keep their count", pod: admitted(nil, testutil.Container("app", "nvidia.com/gpu", "2")),
			outcome: Patched, scheduler: "vgpu-scheduler", gpu: []string{"2/2"}},
		{name: "limits only (no requests map) get both", pod: admitted(func(p *corev1.Pod) { p.Spec.Containers[0].Resources.Requests = nil },
			testutil.Container("app", "nvidia.com/gpumem-percentage", "50")),
			outcome: Patched, scheduler: "vgpu-scheduler", gpu: []string{"1/1"}},
		{name: "init and app containers each defaulted, plain container left alone",
			pod: admitted(nil, testutil.InitContainer("init", "nvidia.com/gpucores", "10"),
				testutil.Container("a", "nvidia.com/gpumem", "500"), testutil.Container("plain", "cpu", "1")),
			outcome: Patched, scheduler: "vgpu-scheduler", gpu: []string{"1/1", "1/1", "/"}},
		{name: "explicit scheduler is kept", pod: admitted(func(p *corev1.Pod) { p.Spec.SchedulerName = "my-scheduler" }, testutil.Container("app", "nvidia.com/gpu", "1")),
			outcome: Allowed, scheduler: "my-scheduler", gpu: []string{"1/1"}},
		{name: "privileged whole GPU is valid", pod: admitted(func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &priv}
		}, testutil.Container("app", "nvidia.com/gpu", "1")),
			outcome: Patched, scheduler: "vgpu-scheduler", gpu: []string{"1/1"}},
	}
	r := &Reviewer{SchedulerName: "vgpu-scheduler", Capacity: fixedCapacity{81920, true}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, outcome := r.Review(admissionRequest(t, tc.pod), true)
			if outcome != tc.outcome || !resp.Allowed || resp.UID != "uid-1" {
				t.Fatalf("outcome %s allowed %v uid %s, want %s allowed; result %+v", outcome, resp.Allowed, resp.UID, tc.outcome, resp.Result)
			}
			if (outcome == Patched) != (resp.Patch != nil) {
				t.Fatalf("outcome %s with patch %s", outcome, resp.Patch)
			}
			got := applied(t, tc.pod, resp)
			if got.Spec.SchedulerName != tc.scheduler {
				t.Errorf("schedulerName %q, want %q", got.Spec.SchedulerName, tc.scheduler)
			}
			cs := append(append([]corev1.Container{}, got.Spec.InitContainers...), got.Spec.Containers...)
			if len(cs) != len(tc.gpu) {
				t.Fatalf("%d containers after the patch, want %d", len(cs), len(tc.gpu))
			}
			for i, want := range tc.gpu {
				l, q := gpuOf(cs[i])
				if l+"/"+q != want {
					t.Errorf("container %s: nvidia.com/gpu limit/request %s/%s, want %s", cs[i].Name, l, q, want)
				}
			}
		})
	}
}

func TestDeny(t *testing.T) {
	priv := true
	cases := []struct {
		name string
		pod  *corev1.Pod
		want []string
	}{
		{name: "cores zero", pod: admitted(nil, testutil.Container("train", "nvidia.com/gpucores", "0")),
			want: []string{`container "train"`, "nvidia.com/gpucores=0", "from 1 to 100"}},
		{name: "cores over 100", pod: admitted(nil, testutil.Container("train", "nvidia.com/gpucores", "101")),
			want: []string{`container "train"`, "nvidia.com/gpucores=101", "from 1 to 100"}},
		{name: "percentage out of range", pod: admitted(nil, testutil.Container("c", "nvidia.com/gpumem-percentage", "150")),
			want: []string{`container "c"`, "nvidia.com/gpumem-percentage=150", "from 1 to 100"}},
		{name: "memory and percentage both", pod: admitted(nil, testutil.Container("c", "nvidia.com/gpumem", "100", "nvidia.com/gpumem-percentage", "10")),
			want: []string{`container "c"`, "nvidia.com/gpumem and nvidia.com/gpumem-percentage are both set"}},
		{name: "non-integer", pod: admitted(nil, testutil.Container("c", "nvidia.com/gpucores", "500m")),
			want: []string{`container "c"`, "nvidia.com/gpucores", "integer"}},
		{name: "requests differ from limits", pod: admitted(func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Requests["nvidia.com/gpumem"] = resource.MustParse("2000")
		}, testutil.Container("c", "nvidia.com/gpumem", "1000")),
			want: []string{`container "c"`, "nvidia.com/gpumem", "requests 2k differ from limits 1k"}},
		{name: "privileged share", pod: admitted(func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &priv}
		}, testutil.Container("c", "nvidia.com/gpucores", "30")),
			want: []string{`container "c"`, "privileged"}},
		{name: "memory above the largest GPU", pod: admitted(nil, testutil.Container("big", "nvidia.com/gpumem", "90000")),
			want: []string{`container "big"`, "nvidia.com/gpumem=90000", "at most 81920"}},
		{name: "every problem listed on one line", pod: admitted(nil, testutil.Container("a", "nvidia.com/gpucores", "0"), testutil.Container("b", "nvidia.com/gpumem-percentage", "0")),
			want: []string{`container "a"`, `container "b"`, "; "}},
	}
	r := &Reviewer{SchedulerName: "vgpu-scheduler", Capacity: fixedCapacity{81920, true}}
	for _, tc := range cases {
		for _, mutate := range []bool{true, false} {
			resp, outcome := r.Review(admissionRequest(t, tc.pod), mutate)
			if resp.Allowed || outcome != Denied || resp.Patch != nil {
				t.Errorf("%s (mutate=%v): allowed=%v outcome=%s, want denied", tc.name, mutate, resp.Allowed, outcome)
				continue
			}
			msg := resp.Result.Message
			if strings.Contains(msg, "\n") {
				t.Errorf("%s: message spans lines: %q", tc.name, msg)
			}
			for _, w := range append(tc.want, "pod team/p") {
				if !strings.Contains(msg, w) {
					t.Errorf("%s: message %q lacks %q", tc.name, msg, w)
				}
			}
		}
	}
}

func TestMemoryCheckWaitsForInventory(t *testing.T) {
	r := &Reviewer{SchedulerName: "s", Capacity: fixedCapacity{}}
	resp, outcome := r.Review(admissionRequest(t, admitted(nil, testutil.Container("c", "nvidia.com/gpumem", "900000"))), false)
	if !resp.Allowed || outcome != Allowed {
		t.Fatalf("with no GPU known yet the memory check must not deny: %+v", resp.Result)
	}
}

func TestValidateDoesNotPatch(t *testing.T) {
	r := &Reviewer{SchedulerName: "s", Capacity: fixedCapacity{81920, true}}
	resp, outcome := r.Review(admissionRequest(t, admitted(nil, testutil.Container("c", "nvidia.com/gpumem", "100"))), false)
	if !resp.Allowed || outcome != Allowed || resp.Patch != nil {
		t.Fatalf("validate: allowed=%v outcome=%s patch=%s", resp.Allowed, outcome, resp.Patch)
	}
}

func TestHandler(t *testing.T) {
	r := &Reviewer{SchedulerName: "vgpu-scheduler", Capacity: fixedCapacity{81920, true}}
	h := Handler(r, true, NewMetrics(prometheus.NewRegistry()), zap.NewNop())
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  admissionRequest(t, admitted(nil, testutil.Container("c", "nvidia.com/gpucores", "20"))),
	}
	body, _ := json.Marshal(review)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil ||
		out.Response.UID != "uid-1" || !out.Response.Allowed || out.Response.PatchType == nil {
		t.Fatalf("response %+v", out)
	}

	for _, bad := range []struct {
		method, body string
		code         int
	}{{http.MethodGet, "", http.StatusMethodNotAllowed}, {http.MethodPost, "{}", http.StatusBadRequest}, {http.MethodPost, "nonsense", http.StatusBadRequest}} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(bad.method, "/mutate", strings.NewReader(bad.body)))
		if rec.Code != bad.code {
			t.Errorf("%s %q: status %d, want %d", bad.method, bad.body, rec.Code, bad.code)
		}
	}
}
