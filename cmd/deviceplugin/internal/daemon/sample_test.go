package daemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

// The Allocate responses for a two-container pod, as the kubelet receives
// them, match the sample in docs/deviceplugin.md (kept in testdata; run
// with -update after an intended change and paste it into the docs).
func TestTwoContainerPodAllocateResponse(t *testing.T) {
	u := mockUUIDs()
	trainer := ctr{Name: "trainer", Devices: []assign.Device{{UUID: u[0], MemoryMiB: 20480, Cores: 50}, {UUID: u[1], MemoryMiB: 20480, Cores: 50}}}
	sidecar := ctr{Name: "metrics", Devices: []assign.Device{{UUID: u[2], MemoryMiB: 4096, Cores: 0}}}
	pod := boundPod("train", 0, trainer, sidecar)
	pod.UID = "6f0c2a9e-1b7d-4c55-9a3e-2d8f4b1c7e90"
	e := start(t, options{libvgpu: true, extraObjects: []*podObj{pod}})
	p := e.plugin("devices", healthyIs(80))
	adm, err := p.Admit(e.ctx, e.pod("train"), contract.ResourceGPU)
	if err != nil {
		t.Fatal(err)
	}
	e.checkContract(pod, trainer, adm.Responses["trainer"])
	e.checkContract(pod, sidecar, adm.Responses["metrics"])
	// Registration completes once the kubelet has answered, which may be
	// after it started reading the device stream.
	e.eventually("registered gauge", func() (bool, string) {
		return e.metric("vgpu_deviceplugin_registered") == 1, "0"
	})
	for name, want := range map[string]float64{
		`vgpu_deviceplugin_allocations_total{result="ok"}`:       2,
		`vgpu_deviceplugin_advertised_devices{health="healthy"}`: 80,
	} {
		if got := e.metric(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	type call struct {
		Container string                      `json:"container"`
		Request   *pluginapi.AllocateRequest  `json:"request"`
		Response  *pluginapi.AllocateResponse `json:"response"`
	}
	var calls []call
	for _, c := range []string{"trainer", "metrics"} {
		calls = append(calls, call{
			Container: c,
			Request:   &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: adm.IDs[c]}}},
			Response:  &pluginapi.AllocateResponse{ContainerResponses: []*pluginapi.ContainerAllocateResponse{adm.Responses[c]}},
		})
	}
	b, err := json.MarshalIndent(calls, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	// Show the default host root instead of the test's temporary one.
	got := strings.ReplaceAll(string(b), e.cfg.HostRoot, contract.HostRoot) + "\n"
	golden := filepath.Join("testdata", "allocate-two-containers.json")
	if testutil.Update() {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("Allocate responses differ from %s (the docs' sample); got:\n%s", golden, got)
	}
}
