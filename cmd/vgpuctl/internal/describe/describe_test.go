package describe

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

const (
	uuid0 = "GPU-a0000000-0000-4000-8000-000000000000"
	uuid1 = "GPU-a1000000-0000-4000-8000-000000000001"
	uuid2 = "GPU-a2000000-0000-4000-8000-000000000002"
)

func gpuNode(t *testing.T, name string, inv device.Inventory) *corev1.Node {
	t.Helper()
	v, err := annotation.EncodeDevices(inv)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{contract.AnnotationDevices: v}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.7"}}},
	}
}

func a100s(n int, uuids ...string) []device.GPU {
	var gs []device.GPU
	for i := 0; i < n; i++ {
		gs = append(gs, device.GPU{UUID: uuids[i], Index: i, Model: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40960, NUMANode: 0, Healthy: true})
	}
	return gs
}

func ctr(name string, devs ...assign.Device) assign.Container {
	return assign.Container{Name: name, Devices: devs}
}

// cluster: gpu-node-1 has three shared A100s; gpu-node-2 one A100 held
// whole and one unhealthy; cpu-node has no GPUs.
func cluster(t *testing.T) []runtime.Object {
	n1 := gpuNode(t, "gpu-node-1", device.Inventory{GPUs: a100s(3, uuid0, uuid1, uuid2), SplitCount: 10, MemoryScaling: 1})
	n2gpus := a100s(2, "GPU-b0000000-0000-4000-8000-000000000000", "GPU-b1000000-0000-4000-8000-000000000001")
	n2gpus[1].Healthy = false
	n2 := gpuNode(t, "gpu-node-2", device.Inventory{GPUs: n2gpus, SplitCount: 4, MemoryScaling: 1.5})
	cpu := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cpu-node"}}
	on1 := func(cs ...assign.Container) testutil.PodOption {
		return testutil.Assigned(assign.Pod{Node: "gpu-node-1", Containers: cs})
	}
	running := testutil.Phase(corev1.PodRunning)
	dev := func(u string, mem int64, cores int) assign.Device {
		return assign.Device{UUID: u, MemoryMiB: mem, Cores: cores}
	}
	initC := ctr("fetch-weights", dev(uuid1, 20480, 0))
	initC.Init = true
	objs := []runtime.Object{n1, n2, cpu,
		testutil.Pod("train-0", testutil.Namespace("team-a"), running, on1(ctr("trainer", dev(uuid0, 16384, 30), dev(uuid2, 16384, 30)))),
		testutil.Pod("train-1", testutil.Namespace("team-a"), running, on1(ctr("trainer", dev(uuid0, 8192, 30)))),
		testutil.Pod("infer", testutil.Namespace("team-b"), running, on1(initC, ctr("server", dev(uuid1, 10240, 0)), ctr("metrics", dev(uuid1, 1024, 10)))),
		testutil.Pod("notebook", testutil.Namespace("team-c"), running, on1(ctr("jupyter", dev(uuid2, 4096, 20)))),
		// finished: holds nothing
		testutil.Pod("done", testutil.Namespace("team-c"), testutil.Phase(corev1.PodSucceeded), on1(ctr("job", dev(uuid2, 30000, 50)))),
		// no GPU at all
		testutil.Pod("web", testutil.Namespace("team-c"), running, testutil.Node("gpu-node-1")),
		testutil.Pod("whole", testutil.Namespace("team-d"), running, testutil.Assigned(assign.Pod{Node: "gpu-node-2", Containers: []assign.Container{
			ctr("sim", assign.Device{UUID: "GPU-b0000000-0000-4000-8000-000000000000", MemoryMiB: 40960, Cores: 100})}})),
	}
	return objs
}

func fakeClient(objs ...runtime.Object) func(*options) (kubernetes.Interface, error) {
	c := fake.NewClientset(objs...)
	return func(*options) (kubernetes.Interface, error) { return c, nil }
}

func run(t *testing.T, objs []runtime.Object, args ...string) (string, string, error) {
	t.Helper()
	cmd := newCommand(fakeClient(objs...))
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"node"}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestDescribeGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"node", []string{"gpu-node-1"}},
		{"node-json", []string{"gpu-node-1", "-o", "json"}},
		{"node-yaml", []string{"gpu-node-1", "-o", "yaml"}},
		{"node-exclusive", []string{"gpu-node-2"}},
		{"list", nil},
		{"list-json", []string{"-o", "json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := run(t, cluster(t), tc.args...)
			if err != nil || errOut != "" {
				t.Fatalf("err %v, stderr %q", err, errOut)
			}
			testutil.Golden(t, tc.name, out)
		})
	}
}

// The numbers a user reads off the table, asserted directly so that a
// wrong golden file cannot hide them.
func TestDescribeCountsLikeTheLedger(t *testing.T) {
	out, _, err := run(t, cluster(t), "gpu-node-1", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		// GPU 0: train-0 16384 + train-1 8192, 60 cores, 2 slots
		`"memoryAllocatedMiB": 24576`,
		// GPU 1: app containers 10240+1024 < init 20480: the init container counts
		`"memoryAllocatedMiB": 20480`,
		// GPU 2: train-0 16384 + notebook 4096; the finished pod does not count
		`"memoryAllocatedMiB": 20480,
      "coresAllocated": 50,`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("json lacks %s:\n%s", want, out)
		}
	}
}

func TestDescribeErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nope"}, `Error from server (NotFound): nodes "nope" not found`},
		{[]string{"cpu-node"}, `node "cpu-node" has no vgpu GPU inventory (neither annotation vgpu.io/devices nor a ResourceSlice of driver gpu.vgpu.io)`},
		{[]string{"gpu-node-1", "-o", "xml"}, `unable to match a printer suitable for the output format "xml", allowed formats are: json,yaml`},
		{[]string{"--usage"}, `--usage needs a node NAME`},
		{[]string{"a", "b"}, `accepts at most 1 arg(s), received 2`},
	} {
		_, _, err := run(t, cluster(t), tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("describe node %v: error %v, want %q", tc.args, err, tc.want)
		}
	}
	_, errOut, err := run(t, []runtime.Object{&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cpu"}}})
	if err != nil || errOut != "No vgpu GPU nodes found.\n" {
		t.Errorf("no GPU nodes: err %v, stderr %q", err, errOut)
	}
	bad := gpuNode(t, "broken", device.Inventory{GPUs: a100s(1, uuid0), SplitCount: 10, MemoryScaling: 1})
	bad.Annotations[contract.AnnotationDevices] = `{"version":"v9"}`
	if _, _, err := run(t, []runtime.Object{bad}, "broken"); err == nil || !strings.Contains(err.Error(), `node "broken": vgpu.io/devices: unknown version "v9"`) {
		t.Errorf("bad inventory: %v", err)
	}
}

// monitorText is what the node's monitor serves, in its own metric names
// (docs/metrics.md); the real monitor is checked against these in the e2e test.
func monitorText() string {
	var b strings.Builder
	b.WriteString("# TYPE vgpu_gpu_memory_used_bytes gauge\n")
	for i, u := range []string{uuid0, uuid1, uuid2} {
		fmt.Fprintf(&b, "vgpu_gpu_memory_used_bytes{gpu=%q,index=\"%d\",model=\"NVIDIA A100-SXM4-40GB\",node=\"gpu-node-1\"} %d\n", u, i, int64(3000+1000*i)<<20)
	}
	b.WriteString("# TYPE vgpu_gpu_utilization_percent gauge\n")
	fmt.Fprintf(&b, "vgpu_gpu_utilization_percent{gpu=%q,index=\"0\",model=\"m\",node=\"gpu-node-1\"} 57\n", uuid0)
	b.WriteString("# TYPE vgpu_container_memory_used_bytes gauge\n")
	fmt.Fprintf(&b, "vgpu_container_memory_used_bytes{container=\"trainer\",gpu=%q,index=\"0\",namespace=\"team-a\",node=\"gpu-node-1\",pod=\"train-0\"} %d\n", uuid0, int64(2500)<<20)
	b.WriteString("# TYPE vgpu_container_utilization_percent gauge\n")
	fmt.Fprintf(&b, "vgpu_container_utilization_percent{container=\"trainer\",gpu=%q,index=\"0\",namespace=\"team-a\",node=\"gpu-node-1\",pod=\"train-0\"} 31\n", uuid0)
	b.WriteString("# TYPE vgpu_container_enforced gauge\n")
	fmt.Fprintf(&b, "vgpu_container_enforced{container=\"trainer\",gpu=%q,index=\"0\",namespace=\"team-a\",node=\"gpu-node-1\",pod=\"train-0\"} 1\n", uuid0)
	fmt.Fprintf(&b, "vgpu_container_enforced{container=\"trainer\",gpu=%q,index=\"0\",namespace=\"team-a\",node=\"gpu-node-1\",pod=\"train-1\"} 0\n", uuid0)
	b.WriteString("# TYPE vgpu_container_unenforced_info gauge\n")
	b.WriteString("vgpu_container_unenforced_info{container=\"trainer\",message=\"VGPU_MEMORY_LIMITS_MIB: \\\"lots\\\" is not a size in MiB\",namespace=\"team-a\",node=\"gpu-node-1\",pod=\"train-1\",reason=\"bad-env\"} 1\n")
	return b.String()
}

func TestDescribeUsage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte(monitorText()))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	out, _, err := run(t, cluster(t), "gpu-node-1", "--usage", "--monitor-address", addr)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "node-usage", strings.ReplaceAll(out, addr, "MONITOR"))

	// Unreachable: allocation is still shown, with a note saying why not usage.
	srv.Close()
	out, _, err = run(t, cluster(t), "gpu-node-1", "--usage", "--monitor-address", addr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Usage:          unavailable, showing allocation only (monitor "+addr+": ") ||
		!strings.Contains(out, "connection refused") || !strings.Contains(out, "team-a     train-0") {
		t.Errorf("unreachable monitor:\n%s", out)
	}
}

// On the DRA path one share is a claim's request used by several
// containers ("a,b"), and the monitor exports the claim's one region under
// each of them: the share shows its usage, enforced only if it is in
// every container, with the reason of the one that is not.
func TestUsageOfAClaimSharedByContainers(t *testing.T) {
	series := func(name, ctr string, v float64) string {
		return fmt.Sprintf("%s{container=%q,gpu=%q,index=\"0\",namespace=\"ns\",node=\"n\",pod=\"p\"} %g\n", name, ctr, uuid0, v)
	}
	for _, tc := range []struct {
		name       string
		enforcedB  float64
		wantOK     bool
		wantReason string
	}{
		{"both enforced", 1, true, ""},
		{"one not", 0, false, "bad-env: x"},
	} {
		text := "# TYPE vgpu_container_memory_used_bytes gauge\n" + series(mCtrMemUsed, "a", 900<<20) + series(mCtrMemUsed, "b", 900<<20) +
			"# TYPE vgpu_container_enforced gauge\n" + series(mCtrEnforced, "a", 1) + series(mCtrEnforced, "b", tc.enforcedB) +
			"# TYPE vgpu_container_unenforced_info gauge\n"
		if tc.wantReason != "" {
			text += `vgpu_container_unenforced_info{container="b",message="x",namespace="ns",node="n",pod="p",reason="bad-env"} 1` + "\n"
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		r := NodeReport{GPUs: []GPUReport{{UUID: uuid0, Pods: []PodShare{
			{Namespace: "ns", Pod: "p", Container: "a,b"}, {Namespace: "ns", Pod: "p", Container: "c"}}}}}
		applyUsage(&r, fams)
		got, other := r.GPUs[0].Pods[0].Used, r.GPUs[0].Pods[1].Used
		if got == nil || got.MemoryUsedMiB != 900 || got.Enforced != tc.wantOK || got.Unenforced != tc.wantReason {
			t.Errorf("%s: share a,b used %+v, want 900 MiB, enforced %v, reason %q", tc.name, got, tc.wantOK, tc.wantReason)
		}
		if other != nil {
			t.Errorf("%s: container c, which no series names, got usage %+v", tc.name, other)
		}
	}
}

func TestFindMonitor(t *testing.T) {
	mon := testutil.Pod("vgpu-monitor-x", testutil.Namespace("vgpu-system"), testutil.Labels(map[string]string{"app.kubernetes.io/name": "vgpu-monitor"}),
		testutil.Node("gpu-node-1"), testutil.Phase(corev1.PodRunning))
	mon.Status.PodIP = "10.244.1.9"
	other := mon.DeepCopy()
	other.Name, other.Spec.NodeName, other.Status.PodIP = "vgpu-monitor-y", "gpu-node-2", "10.244.2.9"
	objs := append(cluster(t), mon, other)
	o := &options{monitorNamespace: "vgpu-system", monitorSelector: "app.kubernetes.io/name=vgpu-monitor", monitorPort: 9394}
	c, _ := fakeClient(objs...)(o)
	n := gpuNode(t, "gpu-node-1", device.Inventory{SplitCount: 1, MemoryScaling: 1})
	if a, err := o.findMonitor(context.Background(), c, n); err != nil || a != "10.244.1.9:9394" {
		t.Fatalf("got %q, %v; want the monitor pod on the node", a, err)
	}
	// No monitor pod: the node's own address (a monitor on the host network).
	n.Name = "gpu-node-3"
	if a, err := o.findMonitor(context.Background(), c, n); err != nil || a != "10.0.0.7:9394" {
		t.Fatalf("got %q, %v; want the node's InternalIP", a, err)
	}
}

func TestMonitorAddressFromNode(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeHostName, Address: "n.local"}, {Type: corev1.NodeInternalIP, Address: "fd00::5"}}}}
	if a, err := monitorAddress(n, 9394); err != nil || a != "[fd00::5]:9394" {
		t.Fatalf("got %q, %v; want the InternalIP", a, err)
	}
	if _, err := monitorAddress(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}}, 9394); err == nil {
		t.Fatal("a node without addresses gave an address")
	}
}

func TestBar(t *testing.T) {
	for _, tc := range []struct {
		used, total int64
		want        string
	}{{0, 100, "[----------]"}, {1, 100, "[#---------]"}, {50, 100, "[#####-----]"}, {100, 100, "[##########]"}, {150, 100, "[##########]"}, {3, 0, "[#---------]"}} {
		if got := bar(tc.used, tc.total); got != tc.want {
			t.Errorf("bar(%d,%d) = %s, want %s", tc.used, tc.total, got, tc.want)
		}
	}
}

// A sidecar (restartable init container) runs beside the app, so the GPU's
// allocated memory is their sum, and the report marks it.
func TestSidecarAddsToTheApp(t *testing.T) {
	n := gpuNode(t, "n", device.Inventory{GPUs: a100s(1, uuid0), SplitCount: 10, MemoryScaling: 1})
	p := testutil.Pod("svc", testutil.Namespace("team-s"), testutil.Phase(corev1.PodRunning), testutil.Assigned(assign.Pod{Node: "n", Containers: []assign.Container{
		{Name: "proxy", Init: true, Sidecar: true, Devices: []assign.Device{{UUID: uuid0, MemoryMiB: 3000, Cores: 20}}},
		ctr("server", assign.Device{UUID: uuid0, MemoryMiB: 4000, Cores: 30})}}))
	out, _, err := run(t, []runtime.Object{n, p}, "n")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"7000/40960 MiB", "50/100", "proxy (sidecar)"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
