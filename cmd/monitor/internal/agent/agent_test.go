package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	vtest "github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/region"
)

const (
	nodeName = "gpu-node-1"
	uuid0    = "GPU-a0000000-0000-4000-8000-000000000000"
	uuid1    = "GPU-a1000000-0000-4000-8000-000000000001"
	uidTrain = "5f1c2a3b-1d2e-4f00-8a9b-0c1d2e3f4a5b"
	uidInfer = "6a2b3c4d-1d2e-4f00-8a9b-0c1d2e3f4a5c"
	uidGone  = "7b3c4d5e-1d2e-4f00-8a9b-0c1d2e3f4a5d"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeRegion writes a region file in libvgpu's format (lib/region; the
// format itself is checked against libvgpu's own programs in regions).
func writeRegion(t *testing.T, root, uid, ctr string, r regions.Region) string {
	reg := region.Region{Header: region.Header{Magic: region.Magic, Version: region.Version, DeviceCount: uint32(len(r.Devices))}}
	if !r.Enforced {
		reg.Header.Flags, reg.Header.Reason, reg.Header.ReasonText = region.FlagUnenforced, region.ReasonDriverUnknown, "unknown driver"
	}
	for i, d := range r.Devices {
		reg.Devices[i] = region.Device{UUID: d.UUID, MemLimit: d.MemoryLimitBytes, MemUsed: d.MemoryUsedBytes, CoreLimit: uint32(d.CoresLimit)}
	}
	for i, p := range r.Processes {
		slot := region.Process{PID: p.PID, State: region.ProcActive, StartTime: p.StartTime}
		copy(slot.MemUsed[:], p.MemoryUsedBytes)
		reg.Processes[i*3] = slot
	}
	path := filepath.Join(root, "containers", contract.ContainerDirName(uid, ctr), contract.RegionFileName)
	writeFile(t, path, string(reg.Encode()))
	return path
}

func fakeProcess(t *testing.T, procRoot string, hostPID int, podUID string, nsPID int) {
	d := filepath.Join(procRoot, fmt.Sprint(hostPID))
	writeFile(t, filepath.Join(d, "cgroup"), "0::/kubepods.slice/kubepods-pod"+strings.ReplaceAll(podUID, "-", "_")+".slice/cri-containerd-1.scope\n")
	writeFile(t, filepath.Join(d, "status"), fmt.Sprintf("Name:\tpython\nNSpid:\t%d\t%d\n", hostPID, nsPID))
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("not the Prometheus text format: %v", err)
	}
	return fams
}

// value finds the one sample of name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m.GetGauge().GetValue() + m.GetCounter().GetValue(), true
	}
	return 0, false
}

func TestMetricsOverHTTP(t *testing.T) {
	root, procRoot := t.TempDir(), t.TempDir()

	// NVML: an A100 DGX; GPU 0 is busy with two processes of the train pod
	// and one of a process outside any pod.
	srv := dgxa100.New()
	gpus.Idle(srv)
	d0, d1 := srv.Devices[0].(*server.Device), srv.Devices[1].(*server.Device)
	d0.UUID, d1.UUID = uuid0, uuid1
	d0.MemoryInfo.Used = 9 << 30
	d0.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 71}, nvml.SUCCESS }
	d0.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 4001, UsedGpuMemory: 3 << 30}, {Pid: 4002, UsedGpuMemory: 1 << 30}, {Pid: 4100, UsedGpuMemory: 1 << 30}}, nvml.SUCCESS
	}
	d0.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		return []nvml.ProcessUtilizationSample{{Pid: 4001, TimeStamp: 10, SmUtil: 20}, {Pid: 4002, TimeStamp: 10, SmUtil: 7}, {Pid: 4100, TimeStamp: 10, SmUtil: 40}}, nvml.SUCCESS
	}
	fakeProcess(t, procRoot, 4001, uidTrain, 12)
	fakeProcess(t, procRoot, 4002, uidTrain, 13)
	writeFile(t, filepath.Join(procRoot, "4100", "cgroup"), "0::/system.slice/x.service\n")

	// Regions: train (enforced, GPU 0), infer's server (unenforced, both
	// GPUs), a corrupt one, an empty directory, and one of a deleted pod.
	trainRegion := writeRegion(t, root, uidTrain, "trainer", regions.Region{Enforced: true,
		Devices:   []regions.Device{{UUID: uuid0, MemoryLimitBytes: 10 << 30, MemoryUsedBytes: 4 << 30, CoresLimit: 30}},
		Processes: []regions.Process{{PID: 12, MemoryUsedBytes: []uint64{3 << 30}}, {PID: 13, MemoryUsedBytes: []uint64{1 << 30}}}})
	writeRegion(t, root, uidInfer, "server", regions.Region{Enforced: false,
		Devices: []regions.Device{{UUID: uuid0, MemoryLimitBytes: 2 << 30, MemoryUsedBytes: 1 << 29}, {UUID: uuid1, MemoryLimitBytes: 2 << 30}}})
	writeFile(t, filepath.Join(root, "containers", uidInfer+"_sidecar", "region"), "\x56\x47\x50\x55truncated")
	if err := os.MkdirAll(filepath.Join(root, "containers", uidInfer+"_starting"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeRegion(t, root, uidGone, "old", regions.Region{Enforced: true})

	inv, _ := annotation.EncodeDevices(device.Inventory{SplitCount: 10, MemoryScaling: 1, GPUs: []device.GPU{
		{UUID: uuid0, Index: 0, Model: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40960, Healthy: true},
		{UUID: uuid1, Index: 1, Model: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40960, Healthy: true}}})
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Annotations: map[string]string{contract.AnnotationDevices: inv}}}
	client := fake.NewClientset(node,
		vtest.Pod("train-0", vtest.Namespace("team-a"), vtest.UID(uidTrain), vtest.Phase(corev1.PodRunning), vtest.Assigned(assign.Pod{Node: nodeName, Containers: []assign.Container{
			{Name: "trainer", Devices: []assign.Device{{UUID: uuid0, MemoryMiB: 10240, Cores: 30}}}}})),
		vtest.Pod("infer", vtest.Namespace("team-b"), vtest.UID(uidInfer), vtest.Phase(corev1.PodRunning), vtest.Assigned(assign.Pod{Node: nodeName, Containers: []assign.Container{
			{Name: "server", Devices: []assign.Device{{UUID: uuid0, MemoryMiB: 2048}, {UUID: uuid1, MemoryMiB: 2048}}},
			{Name: "sidecar", Devices: []assign.Device{{UUID: uuid1, MemoryMiB: 1024, Cores: 10}}}}})),
	)

	core, logs := observer.New(zap.WarnLevel)
	a, err := New(Config{NodeName: nodeName, HostRoot: root, ProcRoot: procRoot, StaleGrace: time.Hour, SweepInterval: time.Hour, FeedInterval: 10 * time.Millisecond,
		AuditInterval: time.Hour, Namespace: contract.DefaultNamespace, SettingsConfigMap: contract.SettingsConfigMap, MemoryTolerance: 1 << 30},
		client, gpus.New(srv), regions.Decode, regions.Publisher{}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, a)

	var fams map[string]*dto.MetricFamily
	for i := 0; i < 3; i++ {
		fams = scrape(t, base+"/metrics")
	}
	g0 := map[string]string{"node": nodeName, "gpu": uuid0, "index": "0", "model": "Mock NVIDIA A100-SXM4-40GB"}
	g1 := map[string]string{"gpu": uuid1, "index": "1"}
	train := map[string]string{"node": nodeName, "namespace": "team-a", "pod": "train-0", "container": "trainer", "gpu": uuid0, "index": "0"}
	infer0 := map[string]string{"namespace": "team-b", "pod": "infer", "container": "server", "gpu": uuid0}
	infer1 := map[string]string{"namespace": "team-b", "pod": "infer", "container": "server", "gpu": uuid1, "index": "1"}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vgpu_gpu_memory_used_bytes", g0, 9 << 30},
		{"vgpu_gpu_memory_total_bytes", g0, 40960 << 20},
		{"vgpu_gpu_utilization_percent", g0, 71},
		{"vgpu_gpu_slots_allocated", g0, 2},
		{"vgpu_gpu_slots_total", g0, 10},
		{"vgpu_gpu_memory_allocated_bytes", g0, (10240 + 2048) << 20},
		{"vgpu_gpu_cores_allocated_percent", g0, 30},
		{"vgpu_gpu_slots_allocated", g1, 2},
		{"vgpu_gpu_memory_allocated_bytes", g1, (2048 + 1024) << 20},
		{"vgpu_gpu_cores_allocated_percent", g1, 10},
		{"vgpu_container_memory_limit_bytes", train, 10 << 30},
		{"vgpu_container_memory_used_bytes", train, 4 << 30},
		{"vgpu_container_cores_limit_percent", train, 30},
		// 20 + 7 from its two processes; the host process's 40 is nobody's
		{"vgpu_container_utilization_percent", train, 27},
		{"vgpu_container_enforced", train, 1},
		{"vgpu_container_enforced", infer0, 0},
		{"vgpu_container_memory_used_bytes", infer0, 1 << 29},
		{"vgpu_container_memory_limit_bytes", infer1, 2 << 30},
		{"vgpu_container_utilization_percent", infer1, 0},
		{"vgpu_monitor_regions", map[string]string{"state": "ok"}, 2},
		{"vgpu_monitor_regions", map[string]string{"state": "corrupt"}, 1},
		{"vgpu_monitor_regions", map[string]string{"state": "absent"}, 1},
		{"vgpu_monitor_regions", map[string]string{"state": "orphaned"}, 1},
		{"vgpu_monitor_nvml_up", nil, 1},
		{"vgpu_container_unenforced_info", map[string]string{"namespace": "team-b", "pod": "infer", "container": "server", "reason": "driver-unknown", "message": "unknown driver"}, 1},
		{"vgpu_monitor_regions_removed_total", nil, 0},
	} {
		got, ok := value(t, fams, c.name, c.labels)
		if !ok {
			t.Errorf("%s%v missing", c.name, c.labels)
			continue
		}
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for name := range fams {
		// Go's and the process's standard collectors keep their own names.
		if !strings.HasPrefix(name, "vgpu_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s lacks the vgpu_ prefix", name)
		}
	}
	if _, ok := value(t, fams, "vgpu_container_unenforced_info", map[string]string{"pod": "train-0"}); ok {
		t.Error("an enforced container is reported unenforced")
	}
	if _, ok := value(t, fams, "vgpu_container_memory_used_bytes", map[string]string{"container": "old"}); ok {
		t.Error("the region of a pod that no longer exists is exported")
	}
	// The feed: train's 27 % reaches its region, for libvgpu's throttle.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(trainRegion)
		r, err := region.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if d := r.Devices[0]; d.UtilSeq > 0 {
			if d.UtilPermille != 270 {
				t.Errorf("fed %d permille, want 270 (20 %% + 7 %% of its two processes)", d.UtilPermille)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no utilisation published into the region of a container with a cores limit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	corrupt := logs.FilterMessageSnippet("unreadable region").Len()
	if corrupt != 1 {
		t.Errorf("3 scrapes logged the corrupt region %d times, want once", corrupt)
	}
}

// serve runs the agent on a loopback port until the test ends and returns
// its base URL once it is healthy.
func serve(t *testing.T, a *Agent) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	waitHealthy(t, base+"/readyz")
	return base
}

func waitHealthy(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy after 10s (last: %v)", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A process that libvgpu does not account for, end to end: NVML (go-nvml's
// mock) shows it, the metrics say the container is unenforced and why, an
// Event lands on the pod, and once the settings say evict, the pod is evicted
// while a container that only lacks a region is left running.
func TestUnenforcedContainerReportedThenEvicted(t *testing.T) {
	root, procRoot := t.TempDir(), t.TempDir()
	const (
		uidRogue = "8c4d5e6f-1d2e-4f00-8a9b-0c1d2e3f4a5e"
		uidIdle  = "9d5e6f70-1d2e-4f00-8a9b-0c1d2e3f4a5f"
		cidRogue = "4b1d9f0e2c3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
	)
	srv := dgxa100.New()
	gpus.Idle(srv)
	d0 := srv.Devices[0].(*server.Device)
	d0.UUID = uuid0
	srv.Devices[1].(*server.Device).UUID = uuid1
	// A statically linked program: on the GPU, in the pod, no region anywhere.
	d0.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 5001, UsedGpuMemory: 6 << 30}}, nvml.SUCCESS
	}
	writeFile(t, filepath.Join(procRoot, "5001", "cgroup"), "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"+
		strings.ReplaceAll(uidRogue, "-", "_")+".slice/cri-containerd-"+cidRogue+".scope\n")
	writeFile(t, filepath.Join(procRoot, "5001", "status"), "NSpid:\t5001\t1\n")

	running := func(p *corev1.Pod, ctr, id string, started time.Time) *corev1.Pod {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ctr, ContainerID: id,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}}}}
		return p
	}
	rogue := running(vtest.Pod("rogue", vtest.Namespace("team-a"), vtest.UID(uidRogue), vtest.Phase(corev1.PodRunning), vtest.Assigned(assign.Pod{Node: nodeName, Containers: []assign.Container{
		{Name: "main", Devices: []assign.Device{{UUID: uuid0, MemoryMiB: 1024}}}}})), "main", "containerd://"+cidRogue, time.Now())
	idle := running(vtest.Pod("notebook", vtest.Namespace("team-b"), vtest.UID(uidIdle), vtest.Phase(corev1.PodRunning), vtest.Assigned(assign.Pod{Node: nodeName, Containers: []assign.Container{
		{Name: "lab", Devices: []assign.Device{{UUID: uuid1, MemoryMiB: 2048}}}}})), "lab", "containerd://0123", time.Now().Add(-2*time.Hour))
	settings := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: contract.DefaultNamespace, Name: contract.SettingsConfigMap},
		Data: map[string]string{"unenforcedAction": "report"}}
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, rogue, idle, settings)
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		ev := a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction)
		return true, nil, client.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), ev.Namespace, ev.Name)
	})

	a, err := New(Config{NodeName: nodeName, HostRoot: root, ProcRoot: procRoot, StaleGrace: time.Hour, SweepInterval: time.Hour, FeedInterval: time.Hour,
		Namespace: contract.DefaultNamespace, SettingsConfigMap: contract.SettingsConfigMap,
		AuditInterval: 20 * time.Millisecond, ConfirmAfter: 50 * time.Millisecond, RegionGrace: time.Hour, MemoryTolerance: 1 << 30},
		client, gpus.New(srv), regions.Decode, nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, a)

	rogueLabels := map[string]string{"namespace": "team-a", "pod": "rogue", "container": "main", "gpu": uuid0, "index": "0"}
	idleLabels := map[string]string{"namespace": "team-b", "pod": "notebook", "container": "lab", "gpu": uuid1, "index": "1"}
	var fams map[string]*dto.MetricFamily
	eventually(t, "both containers reported unenforced", func() bool {
		fams = scrape(t, base+"/metrics")
		_, r := value(t, fams, "vgpu_container_unenforced_info", map[string]string{"pod": "rogue", "reason": "unaccounted-process"})
		_, i := value(t, fams, "vgpu_container_unenforced_info", map[string]string{"pod": "notebook", "reason": "no-region"})
		return r && i
	})
	if v, ok := value(t, fams, "vgpu_monitor_processes_visible", nil); !ok || v != 1 {
		t.Errorf("vgpu_monitor_processes_visible = %v (present %v), want 1", v, ok)
	}
	for _, l := range []map[string]string{rogueLabels, idleLabels} {
		if v, ok := value(t, fams, "vgpu_container_enforced", l); !ok || v != 0 {
			t.Errorf("vgpu_container_enforced%v = %v (present %v), want 0", l, v, ok)
		}
	}
	eventually(t, "an Event on each pod", func() bool {
		evs, _ := client.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
		got := map[string]bool{}
		for _, e := range evs.Items {
			if e.Reason == "GPULimitsUnenforced" && e.Type == corev1.EventTypeWarning {
				got[e.InvolvedObject.Name] = true
			}
		}
		return got["rogue"] && got["notebook"]
	})
	if _, err := client.CoreV1().Pods("team-a").Get(context.Background(), "rogue", metav1.GetOptions{}); err != nil {
		t.Fatalf("evicted in report mode: %v", err)
	}

	settings.Data["unenforcedAction"] = "evict"
	if _, err := client.CoreV1().ConfigMaps(contract.DefaultNamespace).Update(context.Background(), settings, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rogue pod evicted", func() bool {
		_, err := client.CoreV1().Pods("team-a").Get(context.Background(), "rogue", metav1.GetOptions{})
		return err != nil
	})
	time.Sleep(100 * time.Millisecond) // a few more passes
	if _, err := client.CoreV1().Pods("team-b").Get(context.Background(), "notebook", metav1.GetOptions{}); err != nil {
		t.Fatalf("a container without a region was evicted: %v", err)
	}
	fams = scrape(t, base+"/metrics")
	if v, _ := value(t, fams, "vgpu_monitor_evictions_total", map[string]string{"result": "evicted"}); v != 1 {
		t.Errorf("vgpu_monitor_evictions_total{result=evicted} = %v, want 1", v)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	vtest.Eventually(t, 10*time.Second, what, cond)
}
