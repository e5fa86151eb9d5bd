package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/draprepare"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/testkubelet"
	"github.com/vgpu-io/vgpu/internal/gpumock"
	"github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/settings"
)

const nodeName = "gpu-node-1"

// env is one device plugin running in-process against a fake API server,
// a mock NVML and a test kubelet on real unix sockets.
type env struct {
	t        *testing.T
	ctx      context.Context
	client   *fake.Clientset
	nvml     *gpumock.Server
	kubelet  *testkubelet.Kubelet
	cfg      Config
	logs     *observer.ObservedLogs
	registry *prometheus.Registry
	done     chan error
}

type options struct {
	libvgpu      bool
	rejectAs     string
	splitCount   int
	noConfigMap  bool
	numaBySysfs  bool
	extraObjects []*podObj
	// checkpoint is written as the kubelet's checkpoint file before start.
	checkpoint string
	// mode is Config.Mode; "" is the device plugin.
	mode            string
	nodeAnnotations map[string]string
	objects         []runtimeObject
}

func start(t *testing.T, o options) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	// Unix socket paths are limited to 108 bytes: keep the directory short.
	sockDir, err := os.MkdirTemp("", "dp")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	e := &env{t: t, ctx: ctx, done: make(chan error, 1), registry: prometheus.NewRegistry()}
	e.cfg = Config{
		NodeName:          nodeName,
		SocketDir:         sockDir,
		SocketName:        "vgpu.sock",
		HostRoot:          filepath.Join(root, "host"),
		LibvgpuSource:     filepath.Join(root, "image", "libvgpu.so"),
		SysfsRoot:         filepath.Join(root, "sys"),
		Namespace:         contract.DefaultNamespace,
		SettingsConfigMap: contract.SettingsConfigMap,
		IgnoredXids:       []uint64{13, 31, 43, 45, 68, 109},
		DRASockets:        draprepare.Sockets{RegistryDir: filepath.Join(sockDir, "reg"), PluginDir: filepath.Join(sockDir, "dra")},
		CDIDir:            filepath.Join(root, "cdi"),
	}
	if o.checkpoint != "" {
		mustWrite(t, filepath.Join(sockDir, "kubelet_internal_checkpoint"), o.checkpoint)
	}
	if o.libvgpu {
		mustWrite(t, e.cfg.LibvgpuSource, "\x7fELF fake libvgpu for tests")
	}
	if o.numaBySysfs {
		for i := 0; i < 8; i++ {
			mustWrite(t, filepath.Join(e.cfg.SysfsRoot, "bus/pci/devices", fmt.Sprintf("0000:%02x:00.0", i), "numa_node"), fmt.Sprint(i/4))
		}
	}
	e.cfg.Mode = o.mode
	objs := append([]runtimeObject{&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Annotations: o.nodeAnnotations}}}, o.objects...)
	if !o.noConfigMap {
		s := settings.Default()
		if o.splitCount != 0 {
			s.DeviceSplitCount = o.splitCount
		}
		objs = append(objs, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: contract.DefaultNamespace, Name: contract.SettingsConfigMap},
			Data:       s.Data(),
		})
	}
	for _, p := range o.extraObjects {
		objs = append(objs, p)
	}
	e.client = fake.NewClientset(objs...)
	e.nvml = newMock()
	if ret := e.nvml.Init(); ret != 0 {
		t.Fatalf("mock NVML init: %v", ret)
	}
	e.kubelet, err = testkubelet.Start(sockDir, contract.ResourceGPU)
	if err != nil {
		t.Fatal(err)
	}
	e.kubelet.Reject = o.rejectAs
	core, logs := observer.New(zap.InfoLevel)
	e.logs = logs
	log := zap.New(core)
	if testing.Verbose() {
		log = zap.New(zapTee(core, t))
	}
	ready := make(chan struct{})
	go func() {
		e.done <- Run(ctx, e.cfg, Deps{Client: e.client, NVML: e.nvml, Registry: e.registry, Log: log, Ready: func() { close(ready) }})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-e.done:
			if err != nil {
				t.Errorf("plugin stopped with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("plugin did not stop within 10s of its context ending")
		}
		e.kubelet.Stop()
		os.RemoveAll(sockDir)
	})
	select {
	case <-ready:
	case err := <-e.done:
		t.Fatalf("plugin stopped before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("plugin did not start")
	}
	return e
}

// plugin waits for the registered plugin's device list to satisfy ok.
func (e *env) plugin(what string, ok func([]*pluginapi.Device) bool) *testkubelet.Plugin {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	p, err := e.kubelet.WaitPlugin(ctx, ok)
	if err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
	return p
}

// restartKubelet stops the test kubelet and starts a new one, as a kubelet
// restart does (its sockets removed and made again), and waits for the
// plugin on it.
func (e *env) restartKubelet() *testkubelet.Plugin {
	e.t.Helper()
	e.kubelet.Stop()
	k, err := testkubelet.Start(e.cfg.SocketDir, contract.ResourceGPU)
	if err != nil {
		e.t.Fatal(err)
	}
	e.kubelet = k
	return e.plugin("devices on the restarted kubelet", healthyIs(80))
}

func healthyIs(n int) func([]*pluginapi.Device) bool {
	return func(d []*pluginapi.Device) bool { return testkubelet.Healthy(d) == n }
}

// eventually polls cond for up to 15s.
func (e *env) eventually(what string, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("%s: not within 15s; last: %s", what, last)
}

func (e *env) node() *corev1.Node {
	n, err := e.client.CoreV1().Nodes().Get(e.ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) nodePatches() int {
	n := 0
	for _, a := range e.client.Actions() {
		if a.GetVerb() == "patch" && a.GetResource().Resource == "nodes" && a.GetSubresource() == "" {
			n++
		}
	}
	return n
}

func (e *env) createPod(p *corev1.Pod) *corev1.Pod {
	e.t.Helper()
	out, err := e.client.CoreV1().Pods(p.Namespace).Create(e.ctx, p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) pod(name string) *corev1.Pod {
	e.t.Helper()
	p, err := e.client.CoreV1().Pods("default").Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// ctr is a container and the vGPUs the extender gave it.
type ctr = assign.Container

var epoch = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// boundPod is a pod the extender bound to the node, with its assignment;
// each container asks for as many GPUs as it was given.
func boundPod(name string, created int, cs ...ctr) *corev1.Pod {
	a := assign.Pod{Node: nodeName, Containers: cs}
	return testutil.Pod(name, testutil.Namespace("default"), testutil.Scheduler(contract.DefaultSchedulerName), testutil.Phase(corev1.PodPending),
		testutil.Created(epoch.Add(time.Duration(created)*time.Second)), testutil.Assigned(a), testutil.AskingFor(a))
}

type podObj = corev1.Pod

// metric is the value of one series, named as in the text format.
func (e *env) metric(series string) float64 {
	e.t.Helper()
	mfs, err := e.registry.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			if len(m.GetLabel()) > 0 {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				name += "{" + strings.Join(ls, ",") + "}"
			}
			if name != series {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	e.t.Fatalf("no series %s", series)
	return 0
}

func newMock() *gpumock.Server {
	return gpumock.New(gpumock.Spec{Model: "dgxa100", Count: 8}, nodeName)
}

func itoa(n int64) string { return fmt.Sprint(n) }

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
