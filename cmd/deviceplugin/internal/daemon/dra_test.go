package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/containerspec"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/draslice"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/settings"
)

func (e *env) slice() (*resourcev1.ResourceSlice, error) {
	return e.client.ResourceV1().ResourceSlices().Get(e.ctx, draslice.SliceName(nodeName), metav1.GetOptions{})
}

func (e *env) sliceIs(what string, ok func(*resourcev1.ResourceSlice) (bool, string)) *resourcev1.ResourceSlice {
	e.t.Helper()
	var s *resourcev1.ResourceSlice
	e.eventually(what, func() (bool, string) {
		var err error
		if s, err = e.slice(); err != nil {
			return false, err.Error()
		}
		return ok(s)
	})
	return s
}

func capOf(d resourcev1.Device, name resourcev1.QualifiedName) int64 {
	q := d.Capacity[name].Value
	return q.Value()
}

// In DRA mode the node agent publishes one shareable device per GPU, follows
// health and settings, and never offers nvidia.com/gpu to the kubelet or the
// extender (one GPU, one booking).
func TestDRAModePublishesSliceInsteadOfDevicePlugin(t *testing.T) {
	e := start(t, options{mode: ModeDRA, splitCount: 4,
		nodeAnnotations: map[string]string{contract.AnnotationDevices: `{"v":1}`}})
	s := e.sliceIs("slice with 8 GPUs", func(s *resourcev1.ResourceSlice) (bool, string) {
		return len(s.Spec.Devices) == 8, fmt.Sprint(len(s.Spec.Devices), " devices")
	})
	if s.Spec.Driver != dra.Driver || s.Spec.NodeName == nil || *s.Spec.NodeName != nodeName || s.Spec.Pool.Name != nodeName {
		t.Fatalf("slice spec %+v: want driver %s on node %s, pool named after the node", s.Spec, dra.Driver, nodeName)
	}
	// The kubelet finds the DRA service in its plugin registry.
	for _, sock := range []string{filepath.Join(e.cfg.DRASockets.RegistryDir, dra.Driver+"-reg.sock"), filepath.Join(e.cfg.DRASockets.PluginDir, "dra.sock")} {
		if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("DRA mode serves no socket at %s (%v)", sock, err)
		}
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].Kind != "Node" {
		t.Errorf("owner %+v: the Node must own its slice", s.OwnerReferences)
	}
	for i, d := range s.Spec.Devices {
		if got := *d.Attributes[dra.AttrUUID].StringValue; got != e.nvml.UUID(i) {
			t.Errorf("device %s uuid %s: want GPU %d's %s", d.Name, got, i, e.nvml.UUID(i))
		}
		if capOf(d, dra.CapVGPUs) != 4 || capOf(d, dra.CapCores) != 100 {
			t.Errorf("device %s: vgpus %d cores %d: want the split count 4 and 100", d.Name, capOf(d, dra.CapVGPUs), capOf(d, dra.CapCores))
		}
		if mem := *d.Attributes[dra.AttrMemoryMiB].IntValue; capOf(d, dra.CapMemory) != mem*1024*1024 {
			t.Errorf("device %s: memory capacity %d bytes: want %d MiB", d.Name, capOf(d, dra.CapMemory), mem)
		}
	}
	e.eventually("vgpu.io/devices removed from the Node", func() (bool, string) {
		v, has := e.node().Annotations[contract.AnnotationDevices]
		return !has, v
	})
	time.Sleep(300 * time.Millisecond)
	if n := e.kubelet.Attempts(); n != 0 {
		t.Fatalf("the kubelet saw %d device plugin registrations in DRA mode: want none", n)
	}

	if err := e.nvml.InjectXid(3, 79); err != nil {
		t.Fatal(err)
	}
	s = e.sliceIs("GPU 3 tainted", func(s *resourcev1.ResourceSlice) (bool, string) {
		return len(s.Spec.Devices[3].Taints) == 1, fmt.Sprint(s.Spec.Devices[3].Taints)
	})
	if tt := s.Spec.Devices[3].Taints[0]; tt.Key != dra.TaintUnhealthy || tt.Effect != resourcev1.DeviceTaintEffectNoSchedule {
		t.Errorf("taint %+v: want NoSchedule %s", tt, dra.TaintUnhealthy)
	}
	for i, d := range s.Spec.Devices {
		if i != 3 && len(d.Taints) != 0 {
			t.Errorf("healthy %s tainted: %+v", d.Name, d.Taints)
		}
	}
	if s.Spec.Pool.Generation < 2 {
		t.Errorf("pool generation %d after a change: want it raised", s.Spec.Pool.Generation)
	}
	gen := s.Spec.Pool.Generation

	set := settings.Default()
	set.DeviceSplitCount = 6
	cm, err := e.client.CoreV1().ConfigMaps(contract.DefaultNamespace).Get(e.ctx, contract.SettingsConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = set.Data()
	if _, err := e.client.CoreV1().ConfigMaps(contract.DefaultNamespace).Update(e.ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.sliceIs("split count 6 published", func(s *resourcev1.ResourceSlice) (bool, string) {
		return capOf(s.Spec.Devices[0], dra.CapVGPUs) == 6 && s.Spec.Pool.Generation == gen+1, fmt.Sprint(s.Spec.Pool)
	})

	// Nothing changes: nothing is written.
	updates := func() int {
		n := 0
		for _, a := range e.client.Actions() {
			if a.GetResource().Resource == "resourceslices" && (a.GetVerb() == "update" || a.GetVerb() == "create") {
				n++
			}
		}
		return n
	}
	before := updates()
	time.Sleep(300 * time.Millisecond)
	if n := updates() - before; n != 0 {
		t.Errorf("%d slice writes without a change", n)
	}

	if err := e.client.ResourceV1().ResourceSlices().Delete(e.ctx, draslice.SliceName(nodeName), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.sliceIs("a deleted slice comes back", func(s *resourcev1.ResourceSlice) (bool, string) {
		return len(s.Spec.Devices) == 8, fmt.Sprint(len(s.Spec.Devices))
	})
}

// Switching a node back to the device plugin path takes its DRA slice down,
// and only its own.
func TestDevicePluginModeDeletesItsLeftoverSlice(t *testing.T) {
	slice := func(name, node, driver string) *resourcev1.ResourceSlice {
		return &resourcev1.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: resourcev1.ResourceSliceSpec{Driver: driver, NodeName: &node, Pool: resourcev1.ResourcePool{Name: node, Generation: 1, ResourceSliceCount: 1}}}
	}
	e := start(t, options{objects: []runtimeObject{
		slice(draslice.SliceName(nodeName), nodeName, dra.Driver),
		slice("other-node-gpu", "other-node", dra.Driver),
		slice("nic", nodeName, "nic.example.com"),
	}})
	e.plugin("80 healthy devices", healthyIs(80))
	e.eventually("own DRA slice deleted", func() (bool, string) {
		_, err := e.slice()
		return err != nil, "still there"
	})
	for _, name := range []string{"other-node-gpu", "nic"} {
		if _, err := e.client.ResourceV1().ResourceSlices().Get(e.ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("slice %s: %v: another node's or driver's slice must stay", name, err)
		}
	}
}

// On the DRA path as on the device plugin's, a file of the installed
// libvgpu gone from the host is installed again before a claim is
// prepared, and the claim's containers get it; the reinstall is counted.
func TestDRAPrepareReinstallsAMissingLibvgpu(t *testing.T) {
	e := start(t, options{mode: ModeDRA, libvgpu: true})
	e.sliceIs("slice published", func(s *resourcev1.ResourceSlice) (bool, string) { return len(s.Spec.Devices) == 8, "" })
	share := types.UID("share-1")
	c := &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c", UID: "uid-c"}}
	c.Status.Allocation = &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{{
		Request: "gpu", Driver: dra.Driver, Pool: nodeName, Device: dra.DeviceName(0), ShareID: &share,
		ConsumedCapacity: map[resourcev1.QualifiedName]resource.Quantity{
			dra.CapMemory: dra.MiB(1000), dra.CapCores: *resource.NewQuantity(10, resource.DecimalSI),
			dra.CapVGPUs: *resource.NewQuantity(1, resource.DecimalSI)}}}}}
	if _, err := e.client.ResourceV1().ResourceClaims("default").Create(e.ctx, c, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	current, err := filepath.EvalSymlinks(filepath.Join(e.cfg.HostRoot, "lib", "current"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(current, filepath.Base(contract.ContainerLibPath))); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(e.cfg.DRASockets.PluginDir, "dra.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := drapb.NewDRAPluginClient(conn).NodePrepareResources(e.ctx, &drapb.NodePrepareResourcesRequest{
		Claims: []*drapb.Claim{{Namespace: "default", Name: "c", Uid: "uid-c"}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Claims["uid-c"]; r == nil || r.Error != "" || len(r.Devices) != 1 {
		t.Fatalf("prepare with libvgpu removed from the host: %+v", r)
	}
	if err := containerspec.CheckLib(current); err != nil {
		t.Errorf("after the prepare: %v", err)
	}
	if e.metric("vgpu_deviceplugin_libvgpu_reinstalls_total") != 1 {
		t.Error("the reinstall was not counted")
	}
}
