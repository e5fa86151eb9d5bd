package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/allocated"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/kubeletplugin"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/testkubelet"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
)

// 8 GPUs at split 10 advertise 80 devices; a critical Xid on one GPU takes
// its 10 away on the stream and marks it unhealthy in the inventory, while
// an application Xid changes nothing.
func TestAdvertisesSplitTimesHealthyAndDropsOnCriticalXid(t *testing.T) {
	e := start(t, options{numaBySysfs: true})
	p := e.plugin("80 healthy devices", healthyIs(80))
	devs := p.Devices()
	if len(devs) != 80 {
		t.Fatalf("advertised %d devices, want 80", len(devs))
	}
	perGPU := map[string]int{}
	for _, d := range devs {
		perGPU[kubeletplugin.GPUOf(d.ID)]++
		if d.Topology == nil || len(d.Topology.Nodes) != 1 {
			t.Fatalf("device %s has no NUMA node, though sysfs gives every GPU one", d.ID)
		}
	}
	for i := 0; i < 8; i++ {
		if perGPU[e.nvml.UUID(i)] != 10 {
			t.Fatalf("GPU %d has %d device ids, want 10", i, perGPU[e.nvml.UUID(i)])
		}
	}

	if err := e.nvml.InjectXid(4, 13); err != nil { // application error: ignored
		t.Fatal(err)
	}
	if err := e.nvml.InjectXid(3, 79); err != nil { // GPU fell off the bus
		t.Fatal(err)
	}
	p = e.plugin("70 healthy devices after Xid 79 on GPU 3", healthyIs(70))
	for _, d := range p.Devices() {
		onBad := kubeletplugin.GPUOf(d.ID) == e.nvml.UUID(3)
		if onBad != (d.Health == pluginapi.Unhealthy) {
			t.Fatalf("device %s health %s: only GPU 3's devices may be unhealthy", d.ID, d.Health)
		}
	}
	e.eventually("inventory shows GPU 3 unhealthy", func() (bool, string) {
		inv, err := annotation.DecodeDevices(e.node().Annotations[contract.AnnotationDevices])
		if err != nil {
			return false, err.Error()
		}
		return inv.HealthyCount() == 7 && !inv.GPUs[3].Healthy && inv.GPUs[4].Healthy && inv.GPUs[3].NUMANode == 0 && inv.GPUs[4].NUMANode == 1,
			e.node().Annotations[contract.AnnotationDevices]
	})
}

// Ten pods bound to the node at the same moment, in another order than
// their creation, are admitted by the kubelet in the order their bindings
// reach it; every container gets exactly the GPUs and limits of its own
// assignment, init containers included.
func TestConcurrentlyBoundPodsGetTheirOwnAssignments(t *testing.T) {
	u := mockUUIDs()
	var pods []*podSpec
	for i := 0; i < 10; i++ {
		g := u[i%8]
		ps := &podSpec{name: "p" + string(rune('a'+i)), created: i}
		switch i {
		case 3:
			ps.cs = []ctr{
				{Name: "one", Devices: []assign.Device{{UUID: u[1], MemoryMiB: 3000, Cores: 25}}},
				{Name: "two", Devices: []assign.Device{{UUID: u[5], MemoryMiB: 4000, Cores: 0}, {UUID: u[6], MemoryMiB: 5000, Cores: 50}}},
			}
		case 6:
			ps.cs = []ctr{
				{Name: "setup", Init: true, Devices: []assign.Device{{UUID: u[7], MemoryMiB: 1024, Cores: 10}}},
				{Name: "main", Devices: []assign.Device{{UUID: u[2], MemoryMiB: 2048, Cores: 30}}},
			}
		case 8:
			ps.cs = []ctr{{Name: "main", Devices: []assign.Device{{UUID: u[0], MemoryMiB: 6000, Cores: 20}, {UUID: u[4], MemoryMiB: 6000, Cores: 20}}}}
		default:
			ps.cs = []ctr{{Name: "main", Devices: []assign.Device{{UUID: g, MemoryMiB: int64(1000 * (i + 1)), Cores: 5 + i}}}}
		}
		pods = append(pods, ps)
	}
	// They are bound (reach the API server, the kubelet's watch and the
	// plugin's informer) in no particular order.
	bound := []int{7, 2, 9, 0, 4, 1, 8, 3, 6, 5}
	var objs []*podObj
	for k, i := range bound {
		o := boundPod(pods[i].name, pods[i].created, pods[i].cs...)
		o.ResourceVersion = strconv.Itoa(100 + k)
		objs = append(objs, o)
	}
	e := start(t, options{libvgpu: true, extraObjects: objs})
	p := e.plugin("devices", healthyIs(80))

	for _, i := range bound { // the kubelet: the order of the bindings
		ps := pods[i]
		pod := e.pod(ps.name)
		adm, err := p.Admit(e.ctx, pod, contract.ResourceGPU)
		if err != nil {
			t.Fatalf("admitting %s: %v", ps.name, err)
		}
		for _, c := range ps.cs {
			key := c.Name
			if c.Init {
				key = "init:" + c.Name
			}
			e.checkContract(pod, c, adm.Responses[key])
			var gpus []string
			for _, id := range adm.IDs[key] {
				gpus = append(gpus, kubeletplugin.GPUOf(id))
			}
			// A container after an init container gets its ids again.
			if !adm.Reused[key] && !sameSet(gpus, uuidsOf(c.Devices)) {
				t.Errorf("%s/%s: the kubelet was steered to device ids %v, not onto the assigned GPUs %v", ps.name, c.Name, adm.IDs[key], uuidsOf(c.Devices))
			}
		}
	}
	for _, ps := range pods {
		e.eventually(ps.name+" records vgpu.io/allocated", func() (bool, string) {
			v := e.pod(ps.name).Annotations[contract.AnnotationAllocated]
			rec, err := allocated.Decode(v)
			if err != nil || rec.Node != nodeName || len(rec.Containers) != len(ps.cs) {
				return false, v
			}
			for i, c := range ps.cs {
				got := rec.Containers[i]
				if got.Name != c.Name || got.Init != c.Init || !slices.Equal(got.Devices, uuidsOf(c.Devices)) {
					return false, v
				}
			}
			return true, v
		})
	}
}

// A pod deleted before the kubelet admits it leaves the queue without
// shifting the pods behind it onto its assignment.
func TestDeletedPodDoesNotShiftOthers(t *testing.T) {
	u := mockUUIDs()
	a := boundPod("a", 0, ctr{Name: "main", Devices: []assign.Device{{UUID: u[0], MemoryMiB: 1000, Cores: 10}}})
	b := boundPod("b", 1, ctr{Name: "main", Devices: []assign.Device{{UUID: u[1], MemoryMiB: 2000, Cores: 20}}})
	c := boundPod("c", 2, ctr{Name: "main", Devices: []assign.Device{{UUID: u[2], MemoryMiB: 3000, Cores: 30}}})
	d := boundPod("d", 3, ctr{Name: "main", Devices: []assign.Device{{UUID: u[3], MemoryMiB: 4000, Cores: 40}}})
	e := start(t, options{libvgpu: true, extraObjects: []*podObj{a, b, c, d}})
	p := e.plugin("devices", healthyIs(80))

	adm, err := p.Admit(e.ctx, e.pod("a"), contract.ResourceGPU)
	if err != nil {
		t.Fatal(err)
	}
	e.checkContract(a, ctr{Name: "main", Devices: []assign.Device{{UUID: u[0], MemoryMiB: 1000, Cores: 10}}}, adm.Responses["main"])

	if err := e.client.CoreV1().Pods("default").Delete(e.ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The kubelet learns of the deletion from its own watch; wait until the
	// plugin has too: it then steers the next allocation onto c's GPU.
	e.eventually("steering moves past the deleted pod", func() (bool, string) {
		r, err := p.Client.GetPreferredAllocation(e.ctx, &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{
			AvailableDeviceIDs: []string{kubeletplugin.DeviceID(u[1], 0), kubeletplugin.DeviceID(u[2], 0), kubeletplugin.DeviceID(u[3], 0)},
			AllocationSize:     1,
		}}})
		if err != nil {
			return false, err.Error()
		}
		ids := r.ContainerResponses[0].DeviceIDs
		return len(ids) == 1 && kubeletplugin.GPUOf(ids[0]) == u[2], strings.Join(ids, ",")
	})
	for _, x := range []struct {
		name string
		dev  assign.Device
	}{{"c", assign.Device{UUID: u[2], MemoryMiB: 3000, Cores: 30}}, {"d", assign.Device{UUID: u[3], MemoryMiB: 4000, Cores: 40}}} {
		pod := e.pod(x.name)
		adm, err := p.Admit(e.ctx, pod, contract.ResourceGPU)
		if err != nil {
			t.Fatalf("admitting %s: %v", x.name, err)
		}
		e.checkContract(pod, ctr{Name: "main", Devices: []assign.Device{x.dev}}, adm.Responses["main"])
	}
	if _, err := os.Stat(filepath.Join(e.cfg.HostRoot, "containers", "uid-b_main")); !os.IsNotExist(err) {
		t.Errorf("the deleted pod got a region directory (%v)", err)
	}
}

// A kubelet restart removes kubelet.sock and every plugin socket; the
// plugin registers again on the new kubelet and serves allocations.
func TestReregistersAfterKubeletRestart(t *testing.T) {
	u := mockUUIDs()
	pod := boundPod("after-restart", 0, ctr{Name: "main", Devices: []assign.Device{{UUID: u[5], MemoryMiB: 1234, Cores: 12}}})
	e := start(t, options{libvgpu: true, extraObjects: []*podObj{pod}})
	e.plugin("devices before restart", healthyIs(80))
	// A try the kubelet answers Unavailable is retried, as it should be;
	// what must not happen is a second registration once one succeeded
	// (the kubelet would drop and reconnect the plugin each time).
	if n := e.kubelet.Registrations(); n != 1 {
		t.Fatalf("%d registrations before the restart, want 1 (failed tries: %q)", n, e.kubelet.Failures())
	}

	p := e.restartKubelet()
	if n := e.kubelet.Registrations(); n != 1 {
		t.Fatalf("the new kubelet saw %d registrations, want 1 (failed tries: %q)", n, e.kubelet.Failures())
	}
	if f := e.kubelet.Failures(); len(f) > 0 {
		t.Logf("registration tries the new kubelet refused before the one that held: %q", f)
	}
	adm, err := p.Admit(e.ctx, e.pod("after-restart"), contract.ResourceGPU)
	if err != nil {
		t.Fatal(err)
	}
	e.checkContract(pod, ctr{Name: "main", Devices: []assign.Device{{UUID: u[5], MemoryMiB: 1234, Cores: 12}}}, adm.Responses["main"])
}

// A pod without a usable vgpu.io/assignment gets an Allocate error naming
// the node, the pod and what is wrong; the pods behind it are served.
func TestBadAssignmentFailsOnlyThatPod(t *testing.T) {
	u := mockUUIDs()
	missing := boundPod("missing", 0, ctr{Name: "main", Devices: []assign.Device{{UUID: u[0], MemoryMiB: 1000}}})
	delete(missing.Annotations, contract.AnnotationAssignment)
	malformed := boundPod("malformed", 1, ctr{Name: "main", Devices: []assign.Device{{UUID: u[1], MemoryMiB: 1000}}})
	malformed.Annotations[contract.AnnotationAssignment] = `{"version":"v1","node":` // truncated
	wrongCount := boundPod("wrong-count", 2, ctr{Name: "main", Devices: []assign.Device{{UUID: u[2], MemoryMiB: 1000}}})
	wrongCount.Spec.Containers[0].Resources.Limits = boundPod("x", 0, ctr{Name: "main", Devices: []assign.Device{{UUID: u[2], MemoryMiB: 1}, {UUID: u[3], MemoryMiB: 1}}}).Spec.Containers[0].Resources.Limits
	good := boundPod("good", 3, ctr{Name: "main", Devices: []assign.Device{{UUID: u[4], MemoryMiB: 4321, Cores: 40}}})
	e := start(t, options{libvgpu: true, extraObjects: []*podObj{missing, malformed, wrongCount, good}})
	p := e.plugin("devices", healthyIs(80))

	for _, x := range []struct{ pod, want string }{
		{"missing", "vgpu.io/assignment is missing"},
		{"malformed", "vgpu.io/assignment: malformed JSON"},
		{"wrong-count", "gives container \"main\" 1 devices"},
	} {
		_, err := p.Admit(e.ctx, e.pod(x.pod), contract.ResourceGPU)
		if err == nil {
			t.Fatalf("pod %s: Allocate succeeded, want an error", x.pod)
		}
		for _, w := range []string{"node " + nodeName, "pod default/" + x.pod, x.want} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("pod %s: error %q does not say %q", x.pod, err, w)
			}
		}
	}
	adm, err := p.Admit(e.ctx, e.pod("good"), contract.ResourceGPU)
	if err != nil {
		t.Fatalf("the pod behind the bad ones: %v", err)
	}
	e.checkContract(good, ctr{Name: "main", Devices: []assign.Device{{UUID: u[4], MemoryMiB: 4321, Cores: 40}}}, adm.Responses["main"])
}

// With nothing waiting in its cache the plugin reads the node's pods once
// from the API server, so a pod the kubelet saw first is still served.
func TestPodNotYetCachedIsFoundByAFreshRead(t *testing.T) {
	u := mockUUIDs()
	e := start(t, options{libvgpu: true})
	p := e.plugin("devices", healthyIs(80))
	pod := boundPod("fresh", 0, ctr{Name: "main", Devices: []assign.Device{{UUID: u[6], MemoryMiB: 999, Cores: 9}}})
	e.createPod(pod)
	adm, err := p.Admit(e.ctx, pod, contract.ResourceGPU)
	if err != nil {
		t.Fatal(err)
	}
	e.checkContract(pod, ctr{Name: "main", Devices: []assign.Device{{UUID: u[6], MemoryMiB: 999, Cores: 9}}}, adm.Responses["main"])
	if _, err := p.Admit(e.ctx, boundPod("ghost", 1, ctr{Name: "main", Devices: []assign.Device{{UUID: u[6], MemoryMiB: 1}}}), contract.ResourceGPU); err == nil ||
		!strings.Contains(err.Error(), "node "+nodeName+": no pod bound to this node has a container waiting for 1 nvidia.com/gpu") {
		t.Fatalf("allocating for a pod the API server does not have: %v", err)
	}
}

// A restarted plugin knows from vgpu.io/allocated which containers were
// served: an admitted pod does not stand in the queue again.
func TestRestartedPluginSkipsRecordedContainers(t *testing.T) {
	u := mockUUIDs()
	served := boundPod("served", 0, ctr{Name: "main", Devices: []assign.Device{{UUID: u[0], MemoryMiB: 100}}})
	rec, _ := allocated.Encode(allocated.Record{Node: nodeName, Containers: []allocated.Container{{Name: "main", Devices: []string{u[0]}}}})
	served.Annotations[contract.AnnotationAllocated] = rec
	next := boundPod("next", 1, ctr{Name: "main", Devices: []assign.Device{{UUID: u[1], MemoryMiB: 200, Cores: 2}}})
	e := start(t, options{libvgpu: true, extraObjects: []*podObj{served, next}})
	p := e.plugin("devices", healthyIs(80))
	adm, err := p.Admit(e.ctx, e.pod("next"), contract.ResourceGPU)
	if err != nil {
		t.Fatal(err)
	}
	e.checkContract(next, ctr{Name: "main", Devices: []assign.Device{{UUID: u[1], MemoryMiB: 200, Cores: 2}}}, adm.Responses["main"])
}

// A settings change reaches the kubelet and the inventory without a
// restart; the inventory is written once per change and never otherwise.
func TestSettingsChangeReadvertisesAndInventoryWritesOnlyOnChange(t *testing.T) {
	e := start(t, options{})
	e.plugin("80 devices", healthyIs(80))
	e.eventually("first inventory", func() (bool, string) {
		return e.node().Annotations[contract.AnnotationDevices] != "", "no annotation"
	})
	time.Sleep(300 * time.Millisecond) // room for a spurious second write
	if n := e.nodePatches(); n != 1 {
		t.Fatalf("%d inventory writes at start, want 1", n)
	}

	cm, err := e.client.CoreV1().ConfigMaps(contract.DefaultNamespace).Get(e.ctx, contract.SettingsConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["deviceSplitCount"] = "4"
	cm.Data["deviceMemoryScaling"] = "1.5"
	if _, err := e.client.CoreV1().ConfigMaps(contract.DefaultNamespace).Update(e.ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.plugin("32 devices at split 4", func(d []*pluginapi.Device) bool { return len(d) == 32 && testkubelet.Healthy(d) == 32 })
	e.eventually("inventory at split 4", func() (bool, string) {
		inv, err := annotation.DecodeDevices(e.node().Annotations[contract.AnnotationDevices])
		return err == nil && inv.SplitCount == 4 && inv.MemoryScaling == 1.5, e.node().Annotations[contract.AnnotationDevices]
	})

	cm.Data["deviceSplitCount"] = "zero"
	if _, err := e.client.CoreV1().ConfigMaps(contract.DefaultNamespace).Update(e.ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the invalid setting is reported", func() (bool, string) {
		return e.logs.FilterMessageSnippet("settings ConfigMap is invalid").Len() > 0, "no log"
	})
	time.Sleep(300 * time.Millisecond)
	if n := e.nodePatches(); n != 2 {
		t.Fatalf("%d inventory writes after one valid and one invalid change, want 2", n)
	}
	if p := e.plugin("device list", func([]*pluginapi.Device) bool { return true }); len(p.Devices()) != 32 {
		t.Fatalf("an invalid ConfigMap changed the device list to %d", len(p.Devices()))
	}
}

// When the kubelet refuses the registration (another plugin owns the
// resource), the plugin says so and does not try again.
func TestRejectedRegistrationIsLoggedNotRetried(t *testing.T) {
	e := start(t, options{rejectAs: "nvidia.com/gpu is served by another plugin"})
	e.eventually("conflict logged", func() (bool, string) {
		return e.logs.FilterMessageSnippet("the kubelet rejected the registration").Len() == 1, "no log"
	})
	time.Sleep(500 * time.Millisecond) // retries would come within 100ms
	if n := e.kubelet.Attempts(); n != 1 {
		t.Fatalf("%d registration attempts, want 1 (no fighting)", n)
	}
}

// Without libvgpu in the image, containers still get their GPUs and limits
// but no library mount and no LD_PRELOAD of a missing file.
func TestWithoutLibvgpuNoLibraryMounts(t *testing.T) {
	u := mockUUIDs()
	pod := boundPod("nolib", 0, ctr{Name: "main", Devices: []assign.Device{{UUID: u[0], MemoryMiB: 100, Cores: 1}}})
	e := start(t, options{extraObjects: []*podObj{pod}})
	if e.logs.FilterMessageSnippet("libvgpu is not in the plugin image").Len() != 1 {
		t.Fatal("the missing library was not logged")
	}
	p := e.plugin("devices", healthyIs(80))
	adm, err := p.Admit(e.ctx, e.pod("nolib"), contract.ResourceGPU)
	if err != nil {
		t.Fatal(err)
	}
	r := adm.Responses["main"]
	if _, ok := r.Envs[contract.EnvLDPreload]; ok || len(r.Mounts) != 1 || r.Envs[contract.EnvVisibleDevices] != u[0] {
		t.Fatalf("response without libvgpu: %v", r)
	}
}

// checkContract asserts the container got exactly its assignment.
func (e *env) checkContract(pod *podObj, c ctr, r *pluginapi.ContainerAllocateResponse) {
	e.t.Helper()
	if r == nil {
		e.t.Fatalf("%s/%s: no response", pod.Name, c.Name)
	}
	var mem, cores []string
	for _, d := range c.Devices {
		mem = append(mem, itoa(d.MemoryMiB))
		cores = append(cores, itoa(int64(d.Cores)))
	}
	want := map[string]string{
		contract.EnvVisibleDevices: strings.Join(uuidsOf(c.Devices), ","),
		contract.EnvMemoryLimits:   strings.Join(mem, ","),
		contract.EnvCoreLimits:     strings.Join(cores, ","),
		contract.EnvRegion:         contract.ContainerRegionDir + "/" + contract.RegionFileName,
		contract.EnvLDPreload:      contract.ContainerLibPath,
	}
	for k, v := range want {
		if r.Envs[k] != v {
			e.t.Errorf("%s/%s: %s=%q, want %q", pod.Name, c.Name, k, r.Envs[k], v)
		}
	}
	region := filepath.Join(e.cfg.HostRoot, "containers", string(pod.UID)+"_"+c.Name)
	mounts := map[string]*pluginapi.Mount{}
	for _, m := range r.Mounts {
		mounts[m.ContainerPath] = m
	}
	if m := mounts[contract.ContainerRegionDir]; m == nil || m.HostPath != region || m.ReadOnly {
		e.t.Errorf("%s/%s: region mount %v, want %s read-write", pod.Name, c.Name, m, region)
	}
	// libvgpu takes the limits from this file, not from the environment.
	limits := region + contract.HostLimitsSuffix
	if m := mounts[contract.ContainerLimitsPath]; m == nil || m.HostPath != limits || !m.ReadOnly {
		e.t.Errorf("%s/%s: limits mount %v, want %s read-only", pod.Name, c.Name, m, limits)
	} else if b, err := os.ReadFile(limits); err != nil {
		e.t.Errorf("%s/%s: limits file: %v", pod.Name, c.Name, err)
	} else if l, err := contract.ParseLimits(b); err != nil || len(l.Devices) != len(c.Devices) {
		e.t.Errorf("%s/%s: limits file %+v, %v; want %d devices", pod.Name, c.Name, l, err, len(c.Devices))
	} else {
		for i, d := range c.Devices {
			if l.Devices[i].UUID != d.UUID || l.Devices[i].MemoryMiB != d.MemoryMiB || l.Devices[i].Cores != d.Cores {
				e.t.Errorf("%s/%s: limits file device %d is %+v, want %+v", pod.Name, c.Name, i, l.Devices[i], d)
			}
		}
	}
	if st, err := os.Stat(region); err != nil || st.Mode().Perm() != 0o777 {
		e.t.Errorf("%s/%s: region directory %s: %v", pod.Name, c.Name, region, err)
	}
	lib := mounts[filepath.Dir(contract.ContainerLibPath)]
	if lib == nil || !lib.ReadOnly || !strings.HasPrefix(lib.HostPath, filepath.Join(e.cfg.HostRoot, "lib")+"/") {
		e.t.Fatalf("%s/%s: libvgpu mount %v", pod.Name, c.Name, lib)
	}
	if _, err := os.Stat(filepath.Join(lib.HostPath, filepath.Base(contract.ContainerLibPath))); err != nil {
		e.t.Errorf("%s/%s: libvgpu not installed in the mounted dir: %v", pod.Name, c.Name, err)
	}
	pre := mounts[contract.ContainerPreloadPath]
	if pre == nil || !pre.ReadOnly {
		e.t.Fatalf("%s/%s: ld.so.preload mount %v", pod.Name, c.Name, pre)
	}
	if b, err := os.ReadFile(pre.HostPath); err != nil || string(b) != contract.ContainerLibPath+"\n" {
		e.t.Errorf("%s/%s: ld.so.preload = %q, %v", pod.Name, c.Name, b, err)
	}
	if len(r.Mounts) != 4 {
		e.t.Errorf("%s/%s: %d mounts, want 4 (region, library, limits, ld.so.preload)", pod.Name, c.Name, len(r.Mounts))
	}
}

type podSpec struct {
	name    string
	created int
	cs      []ctr
}

func mockUUIDs() []string {
	// The mock derives uuids from the node name, so they are known before
	// the plugin starts, as assignments need.
	s := newMock()
	out := make([]string, 8)
	for i := range out {
		out[i] = s.UUID(i)
	}
	return out
}

func uuidsOf(ds []assign.Device) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.UUID
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// The inventory is written again when someone else removes it.
func TestInventoryRestoredAfterRemoval(t *testing.T) {
	e := start(t, options{})
	e.eventually("first inventory", func() (bool, string) {
		return e.node().Annotations[contract.AnnotationDevices] != "", "no annotation"
	})
	n := e.node()
	delete(n.Annotations, contract.AnnotationDevices)
	if _, err := e.client.CoreV1().Nodes().Update(e.ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("inventory restored", func() (bool, string) {
		_, err := annotation.DecodeDevices(e.node().Annotations[contract.AnnotationDevices])
		return err == nil, fmt.Sprint(err)
	})
}

// Devices of nvidia.com/gpu in the kubelet's checkpoint that are not vgpu's
// mean another plugin served the resource: the plugin warns at start.
func TestForeignPluginInCheckpointIsReported(t *testing.T) {
	e := start(t, options{checkpoint: `{"Data":{"PodDeviceEntries":null,"RegisteredDevices":{"nvidia.com/gpu":["GPU-aaaa","GPU-bbbb"]}},"Checksum":1}`})
	e.plugin("devices", healthyIs(80))
	logs := e.logs.FilterMessageSnippet("another device plugin has served nvidia.com/gpu").All()
	if len(logs) != 1 || logs[0].ContextMap()["count"] != int64(2) {
		t.Fatalf("conflict warning: %+v", logs)
	}
}

// A file of the installed libvgpu gone from the host (a runtime would start
// the container with an empty directory in its place and no libvgpu):
// Allocate installs it again from the plugin's image and serves the
// container. Where it cannot, the pod's admission fails with an error
// naming the missing file, nothing is left of the pod on the host, and the
// pod behind it gets its own container once the host is right again.
func TestMissingLibvgpuIsReinstalledOrRefused(t *testing.T) {
	u := mockUUIDs()
	dev := []assign.Device{{UUID: u[0], MemoryMiB: 3000, Cores: 30}}
	e := start(t, options{libvgpu: true, extraObjects: []*podObj{
		boundPod("repaired", 0, ctr{Name: "main", Devices: dev}),
		boundPod("refused", 1, ctr{Name: "main", Devices: dev}),
		boundPod("after", 2, ctr{Name: "main", Devices: dev}),
	}})
	p := e.plugin("devices", healthyIs(80))
	libDir := filepath.Join(e.cfg.HostRoot, "lib")
	current, err := filepath.EvalSymlinks(filepath.Join(libDir, "current"))
	if err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(current, filepath.Base(contract.ContainerLibPath))
	if err := os.Remove(lib); err != nil {
		t.Fatal(err)
	}
	adm, err := p.Admit(e.ctx, e.pod("repaired"), contract.ResourceGPU)
	if err != nil {
		t.Fatalf("with libvgpu removed from the host: %v", err)
	}
	e.checkContract(e.pod("repaired"), ctr{Name: "main", Devices: dev}, adm.Responses["main"])
	if e.logs.FilterMessageSnippet("reinstalled it").Len() != 1 || e.metric("vgpu_deviceplugin_libvgpu_reinstalls_total") != 1 {
		t.Error("the reinstall was neither logged nor counted")
	}

	// The library directory cannot be made again.
	if err := os.Rename(libDir, libDir+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(libDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = p.Admit(e.ctx, e.pod("refused"), contract.ResourceGPU)
	if err == nil {
		t.Fatal("Allocate succeeded with libvgpu missing and not reinstallable")
	}
	for _, w := range []string{"pod default/refused", "libvgpu is missing on the host: " + lib, "reinstalling it from the device plugin's image failed"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if _, err := os.Stat(filepath.Join(e.cfg.HostRoot, "containers", "uid-refused_main")); !os.IsNotExist(err) {
		t.Errorf("the refused pod's region directory is on the host: %v", err)
	}
	if v, ok := e.pod("refused").Annotations[contract.AnnotationAllocated]; ok {
		t.Errorf("the refused pod is recorded as allocated: %s", v)
	}

	if err := os.Remove(libDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(libDir+".moved", libDir); err != nil {
		t.Fatal(err)
	}
	adm, err = p.Admit(e.ctx, e.pod("after"), contract.ResourceGPU)
	if err != nil {
		t.Fatalf("the pod behind the refused one: %v", err)
	}
	e.checkContract(e.pod("after"), ctr{Name: "main", Devices: dev}, adm.Responses["main"])
}

// A restarted kubelet admits the pods that were bound but not admitted
// before it stopped oldest first, not in the order of their bindings; each
// still gets its own assignment, and a pod bound after the restart comes
// after them.
func TestKubeletRestartAdmitsBoundPodsOldestFirst(t *testing.T) {
	u := mockUUIDs()
	older := boundPod("older", 0, ctr{Name: "main", Devices: []assign.Device{{UUID: u[1], MemoryMiB: 1111, Cores: 11}}})
	older.ResourceVersion = "200"
	newer := boundPod("newer", 5, ctr{Name: "main", Devices: []assign.Device{{UUID: u[2], MemoryMiB: 2222, Cores: 22}}})
	newer.ResourceVersion = "100"
	e := start(t, options{libvgpu: true, extraObjects: []*podObj{older, newer}})
	e.plugin("devices before restart", healthyIs(80))

	p := e.restartKubelet()
	late := boundPod("late", 1, ctr{Name: "main", Devices: []assign.Device{{UUID: u[3], MemoryMiB: 3333, Cores: 33}}})
	late.ResourceVersion = "300"
	e.createPod(late)
	for _, want := range []*podObj{older, newer, late} {
		pod := e.pod(want.Name)
		adm, err := p.Admit(e.ctx, pod, contract.ResourceGPU)
		if err != nil {
			t.Fatalf("admitting %s: %v", want.Name, err)
		}
		a, _ := annotation.DecodeAssignment(want.Annotations[contract.AnnotationAssignment])
		e.checkContract(pod, a.Containers[0], adm.Responses["main"])
	}
}

// A pod deleted gracefully after its binding reached the kubelet (a
// ReplicaSet scaling down takes pending pods first) is still admitted by
// the kubelet, which stops it afterwards: it gets its own container, and so
// do the pods behind it.
func TestPodBeingDeletedIsAdmittedInItsPlace(t *testing.T) {
	u := mockUUIDs()
	var objs []*podObj
	for i, n := range []string{"a", "b", "c"} {
		p := boundPod(n, i, ctr{Name: "main", Devices: []assign.Device{{UUID: u[i], MemoryMiB: int64(1000 * (i + 1)), Cores: 10 * (i + 1)}}})
		p.ResourceVersion = strconv.Itoa(10 + i)
		objs = append(objs, p)
	}
	e := start(t, options{libvgpu: true, extraObjects: objs})
	p := e.plugin("devices", healthyIs(80))
	b := e.pod("b")
	b.DeletionTimestamp = &metav1.Time{Time: epoch.Add(time.Minute)}
	b.ResourceVersion = "20"
	if _, err := e.client.CoreV1().Pods("default").Update(e.ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Nothing to wait on that tells both outcomes apart: give the
	// informer time to deliver the update (it takes milliseconds).
	time.Sleep(300 * time.Millisecond)
	for i, o := range objs {
		pod := e.pod(o.Name)
		adm, err := p.Admit(e.ctx, pod, contract.ResourceGPU)
		if err != nil {
			t.Fatalf("admitting %s: %v", o.Name, err)
		}
		e.checkContract(pod, ctr{Name: "main", Devices: []assign.Device{{UUID: u[i], MemoryMiB: int64(1000 * (i + 1)), Cores: 10 * (i + 1)}}}, adm.Responses["main"])
	}
}
