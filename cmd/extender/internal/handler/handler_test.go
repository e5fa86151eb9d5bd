package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/vgpu-io/vgpu/cmd/extender/internal/metrics"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"

	vtest "github.com/vgpu-io/vgpu/internal/testutil"
)

func inventory(prefix string, mems ...int64) device.Inventory {
	inv := device.Inventory{SplitCount: 4, MemoryScaling: 1}
	for i, m := range mems {
		inv.GPUs = append(inv.GPUs, device.GPU{UUID: prefix + "-" + string(rune('0'+i)), Index: i, Model: "NVIDIA A100-SXM4-80GB", MemoryMiB: m, Healthy: true})
	}
	return inv
}

// books: node "big" 2 × 80 GiB, "small" 1 × 40 GiB, "used" 2 × 80 GiB with
// 60 GiB taken on one GPU, "cpu" without inventory.
func books(t testing.TB) *ledger.Ledger {
	t.Helper()
	l := ledger.New()
	l.SetInventory("big", inventory("big", 81920, 81920))
	l.SetInventory("small", inventory("small", 40960))
	l.SetInventory("used", inventory("used", 81920, 81920))
	err := l.Reserve("other-pod", assign.Pod{Node: "used", Containers: []assign.Container{{Name: "c", Devices: []assign.Device{{UUID: "used-0", MemoryMiB: 61440, Cores: 50}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func gpuPod(ann map[string]string, kv ...string) *corev1.Pod {
	return vtest.Pod("p", vtest.Annotations(ann), vtest.Container("work", kv...))
}

type fakeBinder struct {
	result string
	err    error
	got    *extenderv1.ExtenderBindingArgs
}

func (f *fakeBinder) Bind(_ context.Context, a *extenderv1.ExtenderBindingArgs) (string, error) {
	f.got = a
	return f.result, f.err
}

func newHandler(t testing.TB, s settings.Settings) (*Handler, *[]*corev1.Pod) {
	t.Helper()
	var rejected []*corev1.Pod
	return &Handler{
		Ledger:   books(t),
		Ready:    func() bool { return true },
		Settings: func() settings.Settings { return s },
		Binder:   &fakeBinder{result: "bound"},
		Rejected: func(p *corev1.Pod) { rejected = append(rejected, p) },
		Metrics:  metrics.New(prometheus.NewRegistry(), ledger.New()),
		Log:      zap.NewNop(),
	}, &rejected
}

var allNodes = []string{"big", "small", "used", "cpu"}

func TestFilter(t *testing.T) {
	cases := []struct {
		name       string
		pod        *corev1.Pod
		nodes      []string // default allNodes
		fits       []string
		failed     map[string]string // node → substring of the reason
		unresolved string            // substring of every FailedAndUnresolvable reason
		rejected   bool              // reported for a requeue when capacity frees
	}{
		{name: "pod without vGPU passes everywhere", pod: gpuPod(nil, "cpu", "1"), fits: allNodes},
		{name: "memory share fits where memory is free",
			pod:    gpuPod(nil, "nvidia.com/gpumem", "50000"),
			fits:   []string{"big", "used"},
			failed: map[string]string{"small": "insufficient GPU memory", "cpu": "no vGPU inventory"}},
		{name: "two whole GPUs need two unused GPUs",
			pod:    gpuPod(nil, "nvidia.com/gpu", "2"),
			fits:   []string{"big"},
			failed: map[string]string{"small": "vgpu: too few GPUs", "used": "GPUs in use while the pod needs whole GPUs", "cpu": "no vGPU inventory"}},
		{name: "cores share", pod: gpuPod(nil, "nvidia.com/gpucores", "60", "nvidia.com/gpumem", "1000"),
			fits: []string{"big", "small", "used"}, failed: map[string]string{"cpu": "no vGPU inventory"}},
		{name: "gpu type selector", pod: gpuPod(map[string]string{"nvidia.com/use-gputype": "H100"}, "nvidia.com/gpumem", "1000"),
			fits:   []string{},
			failed: map[string]string{"big": "excluded by the pod's", "small": "excluded", "used": "excluded", "cpu": "no vGPU inventory"}},
		{name: "no node has the memory: reported for requeue",
			pod:      gpuPod(nil, "nvidia.com/gpumem", "70000", "nvidia.com/gpu", "2"),
			nodes:    []string{"small", "used"},
			fits:     []string{},
			failed:   map[string]string{"small": "insufficient GPU memory", "used": "insufficient GPU memory"},
			rejected: true},
		{name: "more GPUs than any node has: not a matter of capacity",
			pod:    gpuPod(nil, "nvidia.com/gpu", "3"),
			nodes:  []string{"big"},
			fits:   []string{},
			failed: map[string]string{"big": "vgpu: too few GPUs"}},
		{name: "a GPU sidecar books beside the app: the sum must fit one GPU",
			pod: vtest.Pod("p", vtest.Sidecar("proxy", "nvidia.com/gpumem", "20000"), vtest.Container("work", "nvidia.com/gpumem", "21000")),
			// small has one 40 GiB GPU: 20000 + 21000 MiB do not fit on it.
			fits:   []string{"big", "used"},
			failed: map[string]string{"small": "insufficient GPU memory", "cpu": "no vGPU inventory"}},
		{name: "a GPU sidecar and the app that together fit one GPU",
			pod:  vtest.Pod("p", vtest.Sidecar("proxy", "nvidia.com/gpumem", "20000"), vtest.Container("work", "nvidia.com/gpumem", "20000")),
			fits: []string{"big", "small", "used"}, failed: map[string]string{"cpu": "no vGPU inventory"}},
		{name: "invalid request fits nowhere, unresolvably",
			pod: gpuPod(nil, "nvidia.com/gpucores", "300"), unresolved: `container "work": nvidia.com/gpucores=300: must be an integer from 1 to 100`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, rejected := newHandler(t, settings.Default())
			nodes := append([]string(nil), allNodes...)
			if tc.nodes != nil {
				nodes = append([]string(nil), tc.nodes...)
			}
			res := h.Filter(&extenderv1.ExtenderArgs{Pod: tc.pod, NodeNames: &nodes})
			if res.Error != "" {
				t.Fatalf("error %s", res.Error)
			}
			if tc.unresolved != "" {
				if len(*res.NodeNames) != 0 || len(res.FailedAndUnresolvableNodes) != len(nodes) {
					t.Fatalf("invalid pod: fits %v, unresolvable %v", *res.NodeNames, res.FailedAndUnresolvableNodes)
				}
				for n, why := range res.FailedAndUnresolvableNodes {
					if !strings.Contains(why, tc.unresolved) {
						t.Errorf("node %s: %q lacks %q", n, why, tc.unresolved)
					}
				}
				return
			}
			if strings.Join(*res.NodeNames, ",") != strings.Join(tc.fits, ",") {
				t.Errorf("fits %v, want %v", *res.NodeNames, tc.fits)
			}
			if len(res.FailedNodes) != len(nodes)-len(tc.fits) {
				t.Errorf("failed %v: every node that does not fit needs a reason", res.FailedNodes)
			}
			for n, sub := range tc.failed {
				if why, ok := res.FailedNodes[n]; !ok || !strings.Contains(why, sub) {
					t.Errorf("node %s: reason %q, want one containing %q", n, why, sub)
				}
			}
			if got := len(*rejected) > 0; got != tc.rejected {
				t.Errorf("reported for requeue: %v, want %v", got, tc.rejected)
			}
		})
	}
}

func TestFilterReportsCapacityRejectionsOnly(t *testing.T) {
	h, rejected := newHandler(t, settings.Default())
	nodes := []string{"small"}
	h.Filter(&extenderv1.ExtenderArgs{Pod: gpuPod(nil, "nvidia.com/gpumem", "50000"), NodeNames: &nodes})
	if len(*rejected) != 1 {
		t.Fatalf("a pod rejected for memory was not reported for requeue")
	}
	nodes = []string{"cpu"}
	h.Filter(&extenderv1.ExtenderArgs{Pod: gpuPod(nil, "nvidia.com/gpumem", "50"), NodeNames: &nodes})
	if len(*rejected) != 1 {
		t.Fatalf("a pod rejected only by nodes without GPUs was reported: no release can help it")
	}
	if got := testutil.ToFloat64(h.Metrics.FailedFits.WithLabelValues(metrics.ReasonMemory)); got != 1 {
		t.Errorf("failed fits for memory = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.Metrics.FailedFits.WithLabelValues(metrics.ReasonNoInventory)); got != 1 {
		t.Errorf("failed fits for no inventory = %v, want 1", got)
	}
}

func TestFilterErrors(t *testing.T) {
	h, _ := newHandler(t, settings.Default())
	if res := h.Filter(&extenderv1.ExtenderArgs{Pod: gpuPod(nil, "nvidia.com/gpu", "1")}); !strings.Contains(res.Error, "nodeCacheCapable") {
		t.Errorf("no node names: error %q", res.Error)
	}
	h.Ready = func() bool { return false }
	nodes := []string{"big"}
	if res := h.Filter(&extenderv1.ExtenderArgs{Pod: gpuPod(nil, "nvidia.com/gpu", "1"), NodeNames: &nodes}); !strings.Contains(res.Error, "not built") {
		t.Errorf("not ready: error %q", res.Error)
	}
}

func scores(l *extenderv1.HostPriorityList) map[string]int64 {
	m := map[string]int64{}
	for _, p := range *l {
		m[p.Host] = p.Score
	}
	return m
}

func TestPrioritize(t *testing.T) {
	binpack, spread := settings.Default(), settings.Default()
	binpack.NodeSchedulerPolicy, spread.NodeSchedulerPolicy = settings.Binpack, settings.Spread
	small := gpuPod(nil, "nvidia.com/gpumem", "100") // so small a share that rounding to nearest would tie
	cases := []struct {
		name     string
		settings settings.Settings
		pod      *corev1.Pod
		check    func(s map[string]int64) bool
		want     string
	}{
		{"binpack prefers the used node", binpack, small,
			func(s map[string]int64) bool { return s["used"] == 10 && s["used"] > s["big"] && s["cpu"] == 0 }, "used 10 > big, cpu 0"},
		{"spread prefers the empty node", spread, small,
			func(s map[string]int64) bool { return s["big"] == 10 && s["used"] < 10 && s["cpu"] == 0 }, "big 10 > used, cpu 0"},
		{"the pod's annotation overrides the cluster policy", binpack,
			gpuPod(map[string]string{"vgpu.io/node-scheduler-policy": "spread"}, "nvidia.com/gpumem", "100"),
			func(s map[string]int64) bool { return s["big"] == 10 && s["used"] < 10 }, "spread order"},
		{"nodes rated almost alike still rank", binpack, small,
			func(s map[string]int64) bool { return s["used"] == 10 && s["small"] < 10 && s["big"] < s["small"] }, "used 10 > small > big"},
		{"a node the pod does not fit scores 0", binpack, gpuPod(nil, "nvidia.com/gpumem", "50000"),
			func(s map[string]int64) bool { return s["small"] == 0 && s["used"] > 0 }, "small 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newHandler(t, tc.settings)
			nodes := append([]string(nil), allNodes...)
			s := scores(h.Prioritize(&extenderv1.ExtenderArgs{Pod: tc.pod, NodeNames: &nodes}))
			for n, v := range s {
				// kube-scheduler counts a node left out as 0: the answer
				// lists only the others.
				if v < 1 || v > extenderv1.MaxExtenderPriority {
					t.Fatalf("node %s listed with score %d, want 1..%d", n, v, extenderv1.MaxExtenderPriority)
				}
			}
			if !tc.check(s) {
				t.Errorf("scores %v, want %s", s, tc.want)
			}
		})
	}
}

func TestHTTP(t *testing.T) {
	h, _ := newHandler(t, settings.Default())
	fb := &fakeBinder{result: "error", err: errors.New("node went away")}
	h.Binder = fb
	mux := http.NewServeMux()
	h.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post := func(path string, in, out any) {
		t.Helper()
		b, _ := json.Marshal(in)
		resp, err := http.Post(srv.URL+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	nodes := []string{"big", "small"}
	var fr extenderv1.ExtenderFilterResult
	post("/filter", extenderv1.ExtenderArgs{Pod: gpuPod(nil, "nvidia.com/gpumem", "50000"), NodeNames: &nodes}, &fr)
	if fr.NodeNames == nil || strings.Join(*fr.NodeNames, ",") != "big" || fr.FailedNodes["small"] == "" {
		t.Errorf("filter over HTTP: %+v", fr)
	}
	var pr extenderv1.HostPriorityList
	post("/prioritize", extenderv1.ExtenderArgs{Pod: gpuPod(nil, "nvidia.com/gpumem", "50000"), NodeNames: &nodes}, &pr)
	// small cannot take the pod: left out, which kube-scheduler counts as 0.
	if len(pr) != 1 || pr[0].Host != "big" || pr[0].Score != extenderv1.MaxExtenderPriority {
		t.Errorf("prioritize over HTTP: %+v, want big alone with %d", pr, extenderv1.MaxExtenderPriority)
	}
	var br extenderv1.ExtenderBindingResult
	post("/bind", extenderv1.ExtenderBindingArgs{PodName: "p", PodNamespace: "ns", PodUID: "u", Node: "big"}, &br)
	if br.Error != "node went away" || fb.got == nil || fb.got.Node != "big" {
		t.Errorf("bind over HTTP: %+v (binder got %+v)", br, fb.got)
	}
	if n := testutil.CollectAndCount(h.Metrics.Latency); n != 3 {
		t.Errorf("latency histograms for %d verbs, want 3", n)
	}
	if got := testutil.ToFloat64(h.Metrics.Binds.WithLabelValues("error")); got != 1 {
		t.Errorf("binds{error} = %v", got)
	}
	resp, err := http.Get(srv.URL + "/filter")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /filter: %d", resp.StatusCode)
	}
}

func TestPrioritizeReusesTheFiltersRatings(t *testing.T) {
	h, _ := newHandler(t, settings.Default())
	pod := gpuPod(nil, "nvidia.com/gpumem", "30000")
	nodes := []string{"big", "used"}
	h.Filter(&extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes})
	// A bind fills "used" between filter and prioritize: prioritize ranks
	// as the filter saw the nodes (binpack: used first), as kube-scheduler's
	// own plugins score the cycle's snapshot.
	if err := h.Ledger.Reserve("late", assign.Pod{Node: "used", Containers: []assign.Container{{Name: "c", Devices: []assign.Device{
		{UUID: "used-1", MemoryMiB: 81920, Cores: 100}}}}}); err != nil {
		t.Fatal(err)
	}
	if s := scores(h.Prioritize(&extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes})); s["used"] != 10 || s["big"] != 0 {
		t.Errorf("scores %v: want the filter's view, used 10, big 0", s)
	}
	// Taken once: the next prioritize of the pod rates afresh.
	if s := scores(h.Prioritize(&extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes})); s["used"] != 0 || s["big"] != 10 {
		t.Errorf("scores %v: want a fresh view, big 10, used 0 (full)", s)
	}
}

// TestSchedulerKeepsItsConnection calls the verbs as kube-scheduler's
// extender client does (decode one JSON value, close the body) with a
// cluster-sized node list, and counts TCP connections: every call on one.
func TestSchedulerKeepsItsConnection(t *testing.T) {
	h, _ := newHandler(t, settings.Default())
	mux := http.NewServeMux()
	h.Routes(mux)
	srv := httptest.NewUnstartedServer(mux)
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{}}
	nodes := []string{"big", "used"}
	for i := range 500 {
		nodes = append(nodes, fmt.Sprintf("node-%04d", i))
	}
	call := func(path string, in, out any) {
		b, _ := json.Marshal(in)
		resp, err := client.Post(srv.URL+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		args := extenderv1.ExtenderArgs{Pod: gpuPod(nil, "nvidia.com/gpumem", "100"), NodeNames: &nodes}
		var fr extenderv1.ExtenderFilterResult
		call("/filter", args, &fr)
		if len(fr.FailedNodes) != 500 {
			t.Fatalf("%d failed nodes, want 500", len(fr.FailedNodes))
		}
		var pr extenderv1.HostPriorityList
		call("/prioritize", args, &pr)
		var br extenderv1.ExtenderBindingResult
		call("/bind", extenderv1.ExtenderBindingArgs{PodName: "p", PodNamespace: "ns", Node: "big"}, &br)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("15 calls took %d TCP connections, want 1", n)
	}
}

// TestPrioritizeFragmentation: under the fragmentation policy the handler
// measures against the learned mix and asks for the nodes' CPU and memory.
// The cluster receives 2-GPU pods: a 1-GPU pod goes where no 2-GPU pod
// could go anyway ("used", one GPU partly taken) rather than break "big".
func TestPrioritizeFragmentation(t *testing.T) {
	s := settings.Default()
	s.NodeSchedulerPolicy, s.GPUSchedulerPolicy = settings.Fragmentation, settings.Fragmentation
	h, _ := newHandler(t, s)
	h.Mix = placement.NewMix(placement.MixOptions{HalfLife: placement.DefaultHalfLife})
	for i := 0; i < 10; i++ {
		h.Mix.Observe(&request.Pod{Containers: []request.Container{{Name: "c", Count: 2, Exclusive: true}}, HostCPUMilli: 4000})
	}
	h.Mix.Refresh()
	asked := map[string]bool{}
	h.Host = func(n string) placement.HostFree {
		asked[n] = true
		return placement.HostFree{CPUMilli: 64000, MemoryMiB: 1 << 20, Known: true}
	}
	nodes := []string{"big", "used"}
	sc := scores(h.Prioritize(&extenderv1.ExtenderArgs{Pod: gpuPod(nil, "nvidia.com/gpu", "1"), NodeNames: &nodes}))
	if sc["used"] != 10 || sc["big"] >= 10 {
		t.Errorf("scores %v, want used 10 > big", sc)
	}
	if !asked["big"] || !asked["used"] {
		t.Errorf("the policy did not ask for the nodes' CPU and memory: %v", asked)
	}
}
