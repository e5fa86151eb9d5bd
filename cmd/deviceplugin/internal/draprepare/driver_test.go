package draprepare

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/containerspec"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/install"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/region"
	"github.com/vgpu-io/vgpu/lib/settings"
)

const node = "node-a"

var gpus = []device.GPU{
	{Index: 0, UUID: "GPU-aaaa", Model: "A100-80GB", MemoryMiB: 81920, Healthy: true},
	{Index: 1, UUID: "GPU-bbbb", Model: "A100-80GB", MemoryMiB: 81920, Healthy: true},
}

// result is one allocated device of vgpu's driver on this node.
func result(request string, index int, memMiB int64, cores int64) resourcev1.DeviceRequestAllocationResult {
	r := resourcev1.DeviceRequestAllocationResult{Request: request, Driver: dra.Driver, Pool: node, Device: dra.DeviceName(index),
		ConsumedCapacity: map[resourcev1.QualifiedName]resource.Quantity{
			dra.CapMemory: dra.MiB(memMiB), dra.CapCores: *resource.NewQuantity(cores, resource.DecimalSI),
			dra.CapVGPUs: *resource.NewQuantity(1, resource.DecimalSI)}}
	share := types.UID("share-" + request + "-" + dra.DeviceName(index))
	r.ShareID = &share
	return r
}

func claim(name string, results []resourcev1.DeviceRequestAllocationResult, config ...string) *resourcev1.ResourceClaim {
	c := &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, UID: types.UID("uid-" + name)}}
	c.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{Results: results}}
	for _, raw := range config {
		c.Status.Allocation.Devices.Config = append(c.Status.Allocation.Devices.Config, resourcev1.DeviceAllocationConfiguration{
			Source: resourcev1.AllocationConfigSourceClaim, Requests: []string{dra.RequestName},
			DeviceConfiguration: resourcev1.DeviceConfiguration{Opaque: &resourcev1.OpaqueDeviceConfiguration{
				Driver: dra.Driver, Parameters: runtime.RawExtension{Raw: []byte(raw)}}}})
	}
	return c
}

// plugin is one run of the node agent's DRA service, as the kubelet sees it.
type plugin struct {
	driver *Driver
	stop   func()
	client drapb.DRAPluginClient
}

type dirs struct{ sock, claims, cdi, lib string }

func newDirs(t testing.TB) dirs {
	// Unix socket paths are limited to 108 bytes: keep the directory short.
	sock, err := os.MkdirTemp("", "dra")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	root := t.TempDir()
	src := filepath.Join(root, "libvgpu.so")
	if err := os.WriteFile(src, []byte("not really a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	lib, err := install.Install(src, filepath.Join(root, "lib"), "test")
	if err != nil {
		t.Fatal(err)
	}
	return dirs{sock: sock, claims: filepath.Join(root, "claims"), cdi: filepath.Join(root, "cdi"), lib: lib}
}

func startPlugin(t testing.TB, d dirs, client *fake.Clientset) *plugin {
	t.Helper()
	drv := &Driver{Node: node, CDIDir: d.cdi, State: gpustate.New(gpus, settings.Default()), Log: zap.NewNop(),
		Host: containerspec.Host{ContainersDir: d.claims, LibDir: d.lib}}
	ctx, cancel := context.WithCancel(context.Background())
	helper, err := Serve(ctx, drv, client, Sockets{RegistryDir: filepath.Join(d.sock, "reg"), PluginDir: filepath.Join(d.sock, "plugin")})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	// The kubelet's side: it finds the registration socket and dials the
	// DRA socket the registration names.
	if _, err := os.Stat(filepath.Join(d.sock, "reg", dra.Driver+"-reg.sock")); err != nil {
		t.Fatalf("registration socket: %v", err)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(d.sock, "plugin", "dra.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p := &plugin{driver: drv, client: drapb.NewDRAPluginClient(conn)}
	p.stop = func() { conn.Close(); helper.Stop(); cancel() }
	t.Cleanup(p.stop)
	return p
}

func ref(c *resourcev1.ResourceClaim) *drapb.Claim {
	return &drapb.Claim{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}
}

func prepare(t *testing.T, p *plugin, claims ...*resourcev1.ResourceClaim) map[string]*drapb.NodePrepareResourceResponse {
	t.Helper()
	req := &drapb.NodePrepareResourcesRequest{}
	for _, c := range claims {
		req.Claims = append(req.Claims, ref(c))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := p.client.NodePrepareResources(ctx, req)
	if err != nil {
		t.Fatalf("NodePrepareResources: %v", err)
	}
	return resp.Claims
}

func readSpec(t *testing.T, d dirs, uid types.UID) (cdispec.Spec, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(d.cdi, "vgpu.io-gpu_"+string(uid)+".json"))
	if err != nil {
		t.Fatalf("CDI spec: %v", err)
	}
	var s cdispec.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s, raw
}

func envOf(e cdispec.ContainerEdits) map[string]string {
	out := map[string]string{}
	for _, kv := range e.Env {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out
}

func mountAt(t *testing.T, e cdispec.ContainerEdits, containerPath string) *cdispec.Mount {
	t.Helper()
	for _, m := range e.Mounts {
		if m.ContainerPath == containerPath {
			return m
		}
	}
	t.Fatalf("no mount at %s in %+v", containerPath, e.Mounts)
	return nil
}

func TestPrepareWritesTheContainerContractAsCDI(t *testing.T) {
	two := claim("two", []resourcev1.DeviceRequestAllocationResult{result("gpu", 0, 20480, 30), result("gpu", 1, 20480, 30)})
	whole := claim("whole", []resourcev1.DeviceRequestAllocationResult{result("gpu/model-0", 1, 81920, 100)},
		`{"apiVersion":"gpu.vgpu.io/v1alpha1","kind":"ShareConfig","memoryPercent":25}`)
	d := newDirs(t)
	p := startPlugin(t, d, fake.NewClientset(two, whole))

	got := prepare(t, p, two, whole)
	for _, c := range []*resourcev1.ResourceClaim{two, whole} {
		if r := got[string(c.UID)]; r == nil || r.Error != "" {
			t.Fatalf("claim %s: %+v", c.Name, r)
		}
	}
	devs := got[string(two.UID)].Devices
	if len(devs) != 2 || devs[0].DeviceName != "gpu-0" || devs[1].DeviceName != "gpu-1" || devs[0].PoolName != node {
		t.Fatalf("devices of claim two: %+v", devs)
	}
	wantID := "vgpu.io/gpu=uid-two-gpu"
	if !slices.Equal(devs[0].CdiDeviceIds, []string{wantID}) || len(devs[1].CdiDeviceIds) != 0 {
		t.Fatalf("CDI ids: %v, %v; want %s once for the request", devs[0].CdiDeviceIds, devs[1].CdiDeviceIds, wantID)
	}
	if devs[0].ShareId == nil || *devs[0].ShareId != "share-gpu-gpu-0" {
		t.Fatalf("share id not passed on: %v", devs[0].ShareId)
	}
	if wd := got[string(whole.UID)].Devices; len(wd) != 1 || !slices.Equal(wd[0].RequestNames, []string{"gpu"}) {
		t.Fatalf("whole claim devices: %+v (request names without the subrequest)", wd)
	}

	spec, _ := readSpec(t, d, two.UID)
	if spec.Kind != "vgpu.io/gpu" || len(spec.Devices) != 1 || spec.Devices[0].Name != "uid-two-gpu" {
		t.Fatalf("spec: kind %q devices %+v", spec.Kind, spec.Devices)
	}
	e := spec.Devices[0].ContainerEdits
	env := envOf(e)
	want := map[string]string{
		contract.EnvVisibleDevices: "GPU-aaaa,GPU-bbbb",
		contract.EnvMemoryLimits:   "20480,20480",
		contract.EnvCoreLimits:     "30,30",
		contract.EnvRegion:         contract.ContainerRegionDir + "/" + contract.RegionFileName,
		contract.EnvLDPreload:      contract.ContainerLibPath,
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	regionDir := filepath.Join(d.claims, "uid-two_gpu")
	if m := mountAt(t, e, contract.ContainerRegionDir); m.HostPath != regionDir || slices.Contains(m.Options, "ro") {
		t.Errorf("region mount %+v: want %s read-write", m, regionDir)
	}
	limits := mountAt(t, e, contract.ContainerLimitsPath)
	if limits.HostPath != regionDir+contract.HostLimitsSuffix || !slices.Contains(limits.Options, "ro") {
		t.Errorf("limits mount %+v", limits)
	}
	if m := mountAt(t, e, filepath.Dir(contract.ContainerLibPath)); m.HostPath != d.lib || !slices.Contains(m.Options, "ro") {
		t.Errorf("libvgpu mount %+v", m)
	}
	if m := mountAt(t, e, contract.ContainerPreloadPath); !slices.Contains(m.Options, "ro") {
		t.Errorf("ld.so.preload mount %+v", m)
	}
	// Every host path the runtime will bind exists.
	for _, m := range e.Mounts {
		if _, err := os.Stat(m.HostPath); err != nil {
			t.Errorf("mount %s: host path: %v", m.ContainerPath, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(regionDir, contract.RegionFileName)); err != nil || fi.Size() != region.Size {
		t.Errorf("region file: %v, %v", fi, err)
	}
	raw, err := os.ReadFile(limits.HostPath)
	if err != nil {
		t.Fatal(err)
	}
	l, err := contract.ParseLimits(raw)
	if err != nil {
		t.Fatal(err)
	}
	wantLimits := []contract.DeviceLimits{{UUID: "GPU-aaaa", MemoryMiB: 20480, Cores: 30}, {UUID: "GPU-bbbb", MemoryMiB: 20480, Cores: 30}}
	if !slices.Equal(l.Devices, wantLimits) {
		t.Errorf("limits file devices %+v, want %+v", l.Devices, wantLimits)
	}

	// A whole GPU with a memory percentage in the opaque config: the
	// booking shows the whole GPU, the limit is 25 % of its memory.
	ws, _ := readSpec(t, d, whole.UID)
	if env := envOf(ws.Devices[0].ContainerEdits); env[contract.EnvMemoryLimits] != "20480" || env[contract.EnvCoreLimits] != "100" ||
		env[contract.EnvVisibleDevices] != "GPU-bbbb" {
		t.Errorf("whole GPU env %v", env)
	}
}

func TestPrepareTwiceGivesTheSameAndKeepsTheRegion(t *testing.T) {
	c := claim("again", []resourcev1.DeviceRequestAllocationResult{result("gpu", 0, 1000, 0)})
	d := newDirs(t)
	p := startPlugin(t, d, fake.NewClientset(c))
	first := prepare(t, p, c)
	_, spec1 := readSpec(t, d, c.UID)
	regionFile := filepath.Join(d.claims, "uid-again_gpu", contract.RegionFileName)
	// What libvgpu wrote into the region must survive a second prepare.
	f, err := os.OpenFile(regionFile, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("ledger"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	second := prepare(t, p, c)
	_, spec2 := readSpec(t, d, c.UID)
	a, _ := json.Marshal(first)
	b, _ := json.Marshal(second)
	if !bytes.Equal(a, b) || !bytes.Equal(spec1, spec2) {
		t.Fatalf("second prepare differs:\n%s\n%s\nspec:\n%s\n%s", a, b, spec1, spec2)
	}
	raw, err := os.ReadFile(regionFile)
	if err != nil || !bytes.HasPrefix(raw, []byte("ledger")) {
		t.Fatalf("region was recreated by the second prepare (%v)", err)
	}
}

func TestUnprepareAfterRestartRemovesEverything(t *testing.T) {
	c := claim("gone", []resourcev1.DeviceRequestAllocationResult{result("gpu", 0, 1000, 10), result("gpu", 1, 1000, 10)})
	other := claim("stays", []resourcev1.DeviceRequestAllocationResult{result("gpu", 0, 2000, 10)})
	d := newDirs(t)
	client := fake.NewClientset(c, other)
	p := startPlugin(t, d, client)
	prepare(t, p, c, other)
	p.stop()

	// A new node agent: nothing in memory, the API server's claim deleted.
	if err := client.ResourceV1().ResourceClaims(c.Namespace).Delete(context.Background(), c.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p = startPlugin(t, d, client)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 { // unprepare is idempotent
		resp, err := p.client.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
		if err != nil {
			t.Fatal(err)
		}
		if r := resp.Claims[string(c.UID)]; r == nil || r.Error != "" {
			t.Fatalf("unprepare: %+v", r)
		}
	}
	for _, path := range []string{
		filepath.Join(d.cdi, "vgpu.io-gpu_uid-gone.json"),
		filepath.Join(d.claims, "uid-gone_gpu"),
		filepath.Join(d.claims, "uid-gone_gpu"+contract.HostLimitsSuffix),
	} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s still there after unprepare (%v)", path, err)
		}
	}
	// The other claim's files are untouched.
	readSpec(t, d, other.UID)
	if _, err := os.Stat(filepath.Join(d.claims, "uid-stays_gpu"+contract.HostLimitsSuffix)); err != nil {
		t.Errorf("other claim's limits file: %v", err)
	}
}

func TestPrepareRefusesWhatItCannotServe(t *testing.T) {
	cases := []struct {
		claim *resourcev1.ResourceClaim
		want  string
	}{
		{claim("badconfig", []resourcev1.DeviceRequestAllocationResult{result("gpu", 0, 81920, 100)},
			`{"apiVersion":"gpu.vgpu.io/v9","kind":"ShareConfig","memoryMiB":10}`), `apiVersion "gpu.vgpu.io/v9"`},
		{claim("bothmemory", []resourcev1.DeviceRequestAllocationResult{result("gpu", 0, 81920, 100)},
			`{"apiVersion":"gpu.vgpu.io/v1alpha1","kind":"ShareConfig","memoryMiB":10,"memoryPercent":5}`), "give at most one"},
		{claim("nogpu", []resourcev1.DeviceRequestAllocationResult{result("gpu", 7, 1000, 0)}), "gpu-7"},
		{claim("foreign", []resourcev1.DeviceRequestAllocationResult{{Request: "gpu", Driver: "other.example.com", Pool: node, Device: "x"}}),
			"no device of driver gpu.vgpu.io"},
	}
	d := newDirs(t)
	client := fake.NewClientset()
	for _, tc := range cases {
		if err := client.Tracker().Add(tc.claim); err != nil {
			t.Fatal(err)
		}
	}
	p := startPlugin(t, d, client)
	for _, tc := range cases {
		r := prepare(t, p, tc.claim)[string(tc.claim.UID)]
		if r == nil || !strings.Contains(r.Error, tc.want) || !strings.Contains(r.Error, tc.claim.Name) {
			t.Errorf("claim %s: %+v, want an error naming the claim and %q", tc.claim.Name, r, tc.want)
		}
		if _, err := os.Stat(filepath.Join(d.cdi, "vgpu.io-gpu_"+string(tc.claim.UID)+".json")); !os.IsNotExist(err) {
			t.Errorf("claim %s: a CDI spec was written for a claim that failed", tc.claim.Name)
		}
	}
}

// A failure of the DRA service the helper cannot recover from stops the
// node agent; a recoverable one is only logged.
func TestFatalErrorsReachTheNodeAgent(t *testing.T) {
	fatal := make(chan error, 1)
	d := &Driver{Log: zap.NewNop(), Fatal: fatal}
	d.HandleError(context.Background(), fmt.Errorf("temporary: %w", kubeletplugin.ErrRecoverable), "publish")
	select {
	case err := <-fatal:
		t.Fatalf("recoverable error reported as fatal: %v", err)
	default:
	}
	d.HandleError(context.Background(), errors.New("listener closed"), "DRA gRPC server failed")
	select {
	case err := <-fatal:
		if !strings.Contains(err.Error(), "DRA gRPC server failed") || !strings.Contains(err.Error(), "listener closed") {
			t.Errorf("fatal error %q does not say what failed", err)
		}
	default:
		t.Fatal("fatal error not reported")
	}
}

// BenchmarkPrepareUnprepare measures one claim's round trip as the kubelet
// makes it: prepare over the socket (region, limits file, CDI spec, all
// synced) and unprepare.
func BenchmarkPrepareUnprepare(b *testing.B) {
	d := newDirs(b)
	client := fake.NewClientset()
	var claims []*resourcev1.ResourceClaim
	for i := range b.N {
		c := claim(fmt.Sprintf("c%d", i), []resourcev1.DeviceRequestAllocationResult{result("gpu", i%2, 1000, 10)})
		if err := client.Tracker().Add(c); err != nil {
			b.Fatal(err)
		}
		claims = append(claims, c)
	}
	p := startPlugin(b, d, client)
	ctx := context.Background()
	b.ResetTimer()
	for _, c := range claims {
		resp, err := p.client.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
		if err != nil || resp.Claims[string(c.UID)].Error != "" {
			b.Fatal(err, resp)
		}
		if _, err := p.client.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}}); err != nil {
			b.Fatal(err)
		}
	}
}

// A claim allocated a GPU that has turned unhealthy since is prepared, as
// Allocate serves such a container on the device plugin path, and the log
// says so, naming the claim and the GPU.
func TestPrepareOnAnUnhealthyGPUWarns(t *testing.T) {
	d := newDirs(t)
	core, logs := observer.New(zap.WarnLevel)
	st := gpustate.New(gpus, settings.Default())
	st.SetHealthy(gpus[1].UUID, false)
	drv := &Driver{Node: node, CDIDir: d.cdi, State: st, Log: zap.New(core),
		Host: containerspec.Host{ContainersDir: d.claims, LibDir: d.lib}}
	c := claim("sick", []resourcev1.DeviceRequestAllocationResult{result("gpu", 1, 1000, 0)})
	res, err := drv.PrepareResourceClaims(context.Background(), []*resourcev1.ResourceClaim{c})
	if err != nil || res[c.UID].Err != nil {
		t.Fatalf("prepare: %v %v", err, res[c.UID].Err)
	}
	w := logs.FilterMessageSnippet("unhealthy").All()
	if len(w) != 1 || w[0].ContextMap()["gpu"] != gpus[1].UUID || w[0].ContextMap()["claim"] != "team/sick" {
		t.Fatalf("warnings %+v: want one naming claim team/sick and GPU %s", w, gpus[1].UUID)
	}
}
