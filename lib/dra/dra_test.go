package dra

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
)

func TestDevicesCapacitiesHonourSettings(t *testing.T) {
	gpus := []device.GPU{
		{UUID: "GPU-a", Index: 0, Model: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40960, NUMANode: 1, Healthy: true},
		{UUID: "GPU-b", Index: 1, Model: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40961, NUMANode: -1, Healthy: false},
	}
	s := settings.Default()
	s.DeviceSplitCount, s.DeviceMemoryScaling = 4, 1.5
	devs, err := Devices(gpus, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].Name != "gpu-0" || devs[1].Name != "gpu-1" {
		t.Fatalf("devices %+v: want gpu-0, gpu-1 in index order", devs)
	}
	d := devs[0]
	if d.AllowMultipleAllocations == nil || !*d.AllowMultipleAllocations {
		t.Error("a GPU must be shareable (allowMultipleAllocations)")
	}
	if got := capValue(d, CapMemory); got != 61440*1024*1024 {
		t.Errorf("memory capacity %d bytes: want 40960 MiB × 1.5", got)
	}
	// 40961 × 1.5 = 61441.5: half a MiB cannot be booked.
	if got := capValue(devs[1], CapMemory); got != 61441*1024*1024 {
		t.Errorf("memory capacity %d bytes: want 61441 MiB, floored", got)
	}
	if got := capValue(d, CapVGPUs); got != 4 {
		t.Errorf("vgpus %d: want the split count 4", got)
	}
	if got := d.Capacity[CapCores].RequestPolicy.Default.Value(); got != 0 {
		t.Errorf("a request naming no cores consumes %d cores: want 0", got)
	}
	if got := d.Capacity[CapVGPUs].RequestPolicy.Default.Value(); got != 1 {
		t.Errorf("a share consumes %d vGPU slots by default: want 1", got)
	}
	if got := d.Capacity[CapMemory].RequestPolicy.Default.Cmp(d.Capacity[CapMemory].Value); got != 0 {
		t.Error("a request naming no memory must book the whole GPU's memory")
	}
	if *d.Attributes[AttrUUID].StringValue != "GPU-a" || *d.Attributes[AttrNUMANode].IntValue != 1 || *d.Attributes[AttrMemoryMiB].IntValue != 40960 {
		t.Errorf("attributes %+v", d.Attributes)
	}
	mc := ModelCapacity(Model{Name: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40960})
	if c, ok := d.Capacity[mc]; !ok || c.Value.Value() != 0 || c.RequestPolicy == nil || c.RequestPolicy.Default.Value() != 0 {
		t.Errorf("model capacity %s: %+v: want 0, consumed by nobody", mc, c)
	}
	if _, ok := devs[1].Capacity[mc]; ok {
		t.Error("a GPU with other memory must not carry the same model capacity")
	}
	// The API takes C identifiers of at most 32 characters as capacity names.
	if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,31}$`).MatchString(string(mc)) {
		t.Errorf("model capacity name %q is no C identifier of at most 32 characters", mc)
	}
	if len(d.Taints) != 0 {
		t.Errorf("healthy GPU tainted: %+v", d.Taints)
	}
	if tt := devs[1].Taints; len(tt) != 1 || tt[0].Key != TaintUnhealthy || tt[0].Effect != resourcev1.DeviceTaintEffectNoSchedule {
		t.Errorf("unhealthy GPU taints %+v: want one NoSchedule %s", tt, TaintUnhealthy)
	}
}

func TestDevicesRejectsWhatOneSliceCannotHold(t *testing.T) {
	gpus := make([]device.GPU, MaxDevicesPerSlice+1)
	for i := range gpus {
		gpus[i] = device.GPU{UUID: string(rune('a' + i)), Index: i, MemoryMiB: 1, Healthy: true}
	}
	if _, err := Devices(gpus, settings.Default()); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Fatalf("err %v: want a limit error naming 64", err)
	}
}

func exact(t *testing.T, s resourcev1.ResourceClaimSpec) *resourcev1.ExactDeviceRequest {
	t.Helper()
	if len(s.Devices.Requests) != 1 || s.Devices.Requests[0].Exactly == nil {
		t.Fatalf("want one exact request, got %+v", s.Devices.Requests)
	}
	return s.Devices.Requests[0].Exactly
}

func TestClaimSpecShare(t *testing.T) {
	s, err := ClaimSpec(request.Container{Name: "c", Count: 1, MemoryMiB: 8000, Cores: 30}, request.Selector{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := exact(t, s)
	if e.DeviceClassName != DeviceClass || e.Count != 1 {
		t.Errorf("request %+v", e)
	}
	r := e.Capacity.Requests
	if qv(r[CapMemory]) != 8000*1024*1024 || qv(r[CapCores]) != 30 {
		t.Errorf("capacity requests %v: want memory 8000Mi, cores 30", r)
	}
	if _, ok := r[CapVGPUs]; ok {
		t.Error("a share must take the default one vGPU slot, not name it")
	}
	if len(s.Devices.Constraints) != 0 {
		t.Errorf("one vGPU needs no constraint: %+v", s.Devices.Constraints)
	}
}

func TestClaimSpecNoCoresNamesNone(t *testing.T) {
	s, err := ClaimSpec(request.Container{Name: "c", Count: 1, MemoryMiB: 100}, request.Selector{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := exact(t, s).Capacity.Requests[CapCores]; ok {
		t.Error("gpucores omitted must not request cores")
	}
}

func TestClaimSpecCountLandsOnDistinctGPUs(t *testing.T) {
	s, err := ClaimSpec(request.Container{Name: "c", Count: 3, MemoryMiB: 100}, request.Selector{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if exact(t, s).Count != 3 {
		t.Errorf("count %d: want 3", exact(t, s).Count)
	}
	c := s.Devices.Constraints
	if len(c) != 1 || c[0].DistinctAttribute == nil || string(*c[0].DistinctAttribute) != "gpu.vgpu.io/uuid" {
		t.Fatalf("constraints %+v: want distinctAttribute gpu.vgpu.io/uuid", c)
	}
}

func TestClaimSpecWholeGPUIsExclusive(t *testing.T) {
	s, err := ClaimSpec(request.Container{Name: "c", Count: 1, Exclusive: true}, request.Selector{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := exact(t, s).Capacity.Requests
	if _, ok := r[CapMemory]; ok {
		t.Error("a whole GPU must leave memory unnamed, booking all of it")
	}
	if qv(r[CapCores]) != 100 {
		t.Errorf("cores %v: want 100", r[CapCores])
	}
	if len(s.Devices.Config) != 0 {
		t.Errorf("no memory limit, no config: %+v", s.Devices.Config)
	}
	// gpucores 100 with a memory limit: still exclusive, the limit travels in the settings.
	s, err = ClaimSpec(request.Container{Name: "c", Count: 1, MemoryMiB: 1000, Cores: 100, Exclusive: true}, request.Selector{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := exact(t, s).Capacity.Requests[CapMemory]; ok {
		t.Error("an exclusive share with gpumem must still book the whole memory")
	}
	var cfg ShareConfig
	if len(s.Devices.Config) != 1 || json.Unmarshal(s.Devices.Config[0].Opaque.Parameters.Raw, &cfg) != nil || cfg.MemoryMiB != 1000 || cfg.Kind != ConfigKind {
		t.Fatalf("config %+v: want a ShareConfig with memoryMiB 1000", s.Devices.Config)
	}
}

func TestClaimSpecPercentageResolvesPerModel(t *testing.T) {
	models := []Model{{"NVIDIA H100 80GB HBM3", 81559}, {"NVIDIA A100-SXM4-40GB", 40960}, {"NVIDIA A100-SXM4-40GB", 40960}, {"Tesla T4", 15360}}
	s, err := ClaimSpec(request.Container{Name: "c", Count: 2, MemoryPercent: 25, Cores: 10}, request.Selector{NoUseTypes: []string{"t4"}}, models)
	if err != nil {
		t.Fatal(err)
	}
	alts := s.Devices.Requests[0].FirstAvailable
	if len(alts) != 2 {
		t.Fatalf("%d alternatives: want A100 and H100 (T4 excluded, duplicates merged): %+v", len(alts), alts)
	}
	want := map[Model]int64{{"NVIDIA A100-SXM4-40GB", 40960}: 10240, {"NVIDIA H100 80GB HBM3", 81559}: 20389}
	for _, a := range alts {
		// The alternative names its model's capacity, with 0, and no
		// other model's.
		var model string
		for m := range want {
			if q, ok := a.Capacity.Requests[ModelCapacity(m)]; ok && qv(q) == 0 {
				if model != "" {
					t.Fatalf("alternative %s names two models: %v", a.Name, a.Capacity.Requests)
				}
				model = m.Name
			}
		}
		if model == "" {
			t.Fatalf("alternative %s names no known model: %v", a.Name, a.Capacity.Requests)
		}
		if len(a.Selectors) != 1 {
			t.Errorf("%s: selectors %v: want only the pod's type selector, the model needs no CEL", model, a.Selectors)
		}
		var wantMiB int64
		for m, mib := range want {
			if m.Name == model {
				wantMiB = mib
			}
		}
		if got := qv(a.Capacity.Requests[CapMemory]) / (1024 * 1024); got != wantMiB {
			t.Errorf("%s: memory %d MiB: want %d (25 %% of its own memory)", model, got, wantMiB)
		}
		if a.Count != 2 || qv(a.Capacity.Requests[CapCores]) != 10 {
			t.Errorf("%s: count %d cores %v", model, a.Count, a.Capacity.Requests[CapCores])
		}
		if !strings.Contains(a.Selectors[0].CEL.Expression, `!(`) {
			t.Errorf("%s: the pod's nouse-gputype must stay a selector: %v", model, a.Selectors)
		}
	}
	if len(s.Devices.Constraints) != 1 {
		t.Error("two vGPUs need the distinct-uuid constraint on the prioritized request too")
	}
}

// TestClaimSpecCountWithinOneAllocation: kube-scheduler's allocator fails
// a claim of more devices than one allocation holds (32) on every node, so
// the pod would never land; the webhook denies it instead.
func TestClaimSpecCountWithinOneAllocation(t *testing.T) {
	if _, err := ClaimSpec(request.Container{Name: "c", Count: resourcev1.AllocationResultsMaxSize, Exclusive: true}, request.Selector{}, nil); err != nil {
		t.Errorf("%d GPUs: %v", resourcev1.AllocationResultsMaxSize, err)
	}
	_, err := ClaimSpec(request.Container{Name: "c", Count: resourcev1.AllocationResultsMaxSize + 1, Exclusive: true}, request.Selector{}, nil)
	if err == nil || !strings.Contains(err.Error(), `container "c": nvidia.com/gpu=33: must be at most 32`) {
		t.Errorf("33 GPUs: %v, want a denial naming the container, the resource and the limit", err)
	}
}

func TestClaimSpecPercentageErrors(t *testing.T) {
	c := request.Container{Name: "train", Count: 1, MemoryPercent: 50}
	if _, err := ClaimSpec(c, request.Selector{}, nil); err == nil || !strings.Contains(err.Error(), `"train"`) || !strings.Contains(err.Error(), "no node has published") {
		t.Errorf("no models: %v", err)
	}
	if _, err := ClaimSpec(c, request.Selector{UseTypes: []string{"h200"}}, []Model{{"A100", 1}}); err == nil || !strings.Contains(err.Error(), "selector") {
		t.Errorf("no matching model: %v", err)
	}
	var many []Model
	for i := range MaxModels + 1 {
		many = append(many, Model{Name: "M" + string(rune('a'+i)), MemoryMiB: 100})
	}
	if _, err := ClaimSpec(c, request.Selector{}, many); err == nil || !strings.Contains(err.Error(), "9 GPU models") {
		t.Errorf("too many models: %v", err)
	}
	// An init container is named as lib/request names it.
	c.Init = true
	if _, err := ClaimSpec(c, request.Selector{}, nil); err == nil || !strings.HasPrefix(err.Error(), `init container "train": `) {
		t.Errorf("init container without models: %v, want it named as an init container", err)
	}
}

// TestClaimSpecSelectorWithinTheAPILimit: a CEL selector longer than the
// API takes would make the template's creation fail; the webhook denies
// the pod naming the annotation instead.
func TestClaimSpecSelectorWithinTheAPILimit(t *testing.T) {
	var uuids []string
	for i := range 300 {
		uuids = append(uuids, fmt.Sprintf("GPU-%08d-aaaa-bbbb-cccc-dddddddddddd", i))
	}
	c := request.Container{Name: "c", Count: 1, MemoryMiB: 100}
	if _, err := ClaimSpec(c, request.Selector{UseUUIDs: uuids[:100]}, nil); err != nil {
		t.Errorf("100 uuids: %v", err)
	}
	_, err := ClaimSpec(c, request.Selector{UseTypes: []string{"A100"}, NoUseUUIDs: uuids}, nil)
	if err == nil || !strings.Contains(err.Error(), `container "c": annotation nvidia.com/nouse-gpuuuid`) || !strings.Contains(err.Error(), "10240") {
		t.Errorf("300 uuids: %v, want a denial naming the container, the annotation and the limit", err)
	}
}

func TestSelectorsCEL(t *testing.T) {
	got := selectorsCEL(request.Selector{UseTypes: []string{"A100", "H100"}, NoUseUUIDs: []string{"GPU-X"}})
	if len(got) != 2 {
		t.Fatalf("%v", got)
	}
	want0 := `device.attributes["gpu.vgpu.io"].model.lowerAscii().contains("a100") || device.attributes["gpu.vgpu.io"].model.lowerAscii().contains("h100")`
	if got[0].CEL.Expression != want0 {
		t.Errorf("types: %s", got[0].CEL.Expression)
	}
	want1 := `!(device.attributes["gpu.vgpu.io"].uuid.lowerAscii() in ["gpu-x"])`
	if got[1].CEL.Expression != want1 {
		t.Errorf("uuids: %s", got[1].CEL.Expression)
	}
	// A quote in an annotation cannot break out of the string literal.
	if e := selectorsCEL(request.Selector{UseTypes: []string{`a") || true || ("`}})[0].CEL.Expression; !strings.Contains(e, `\"`) {
		t.Errorf("unescaped: %s", e)
	}
}

func TestTemplateNameFollowsSpec(t *testing.T) {
	a, _ := ClaimSpec(request.Container{Name: "x", Count: 1, MemoryMiB: 100}, request.Selector{}, nil)
	b, _ := ClaimSpec(request.Container{Name: "y", Count: 1, MemoryMiB: 100}, request.Selector{}, nil)
	c, _ := ClaimSpec(request.Container{Name: "x", Count: 1, MemoryMiB: 101}, request.Selector{}, nil)
	if TemplateName(a) != TemplateName(b) {
		t.Error("the same request must share one template whatever the container is called")
	}
	if TemplateName(a) == TemplateName(c) {
		t.Error("different requests must not share a template")
	}
}

func TestModelsOf(t *testing.T) {
	devs, _ := Devices([]device.GPU{{UUID: "a", Model: "A100", MemoryMiB: 40960, Healthy: true}, {UUID: "b", Index: 1, Model: "A100", MemoryMiB: 40960, Healthy: true}}, settings.Default())
	other := &resourcev1.ResourceSlice{Spec: resourcev1.ResourceSliceSpec{Driver: "other.example.com", Devices: []resourcev1.Device{{Name: "x",
		Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{AttrModel: {StringValue: ptr("Z")}, AttrMemoryMiB: {IntValue: ptr(int64(999999))}}}}}}
	models, largest := ModelsOf([]*resourcev1.ResourceSlice{{Spec: resourcev1.ResourceSliceSpec{Driver: Driver, Devices: devs}}, other})
	if len(models) != 1 || models[0] != (Model{"A100", 40960}) || largest != 40960 {
		t.Errorf("models %v largest %d: want one A100 of 40960 MiB, other drivers ignored", models, largest)
	}
}

// The webhook names a model's capacity from what it reads back from the
// slices, the node agent from what it discovered: with memory scaling on,
// both must still agree, or no percentage claim would ever land.
func TestModelCapacityAgreesBetweenSliceAndClaim(t *testing.T) {
	s := settings.Default()
	s.DeviceMemoryScaling = 2
	devs, err := Devices([]device.GPU{{UUID: "a", Model: "NVIDIA A100-SXM4-80GB", MemoryMiB: 81920, Healthy: true}}, s)
	if err != nil {
		t.Fatal(err)
	}
	models, _ := ModelsOf([]*resourcev1.ResourceSlice{{Spec: resourcev1.ResourceSliceSpec{Driver: Driver, Devices: devs}}})
	spec, err := ClaimSpec(request.Container{Name: "c", Count: 1, MemoryPercent: 50}, request.Selector{}, models)
	if err != nil {
		t.Fatal(err)
	}
	alts := spec.Devices.Requests[0].FirstAvailable
	if len(alts) != 1 {
		t.Fatalf("alternatives %+v: want one", alts)
	}
	for name := range alts[0].Capacity.Requests {
		if _, ok := devs[0].Capacity[name]; !ok {
			t.Errorf("the claim asks for capacity %s, which the GPU's device does not publish", name)
		}
	}
}

func capValue(d resourcev1.Device, name resourcev1.QualifiedName) int64 {
	q := d.Capacity[name].Value
	return q.Value()
}

func qv(q resource.Quantity) int64 { return q.Value() }

// TestSharesLimitUnnamedMemoryToTheGPU: with deviceMemoryScaling above 1, a
// share whose claim names no memory books the GPU's whole scaled memory
// (so nothing else fits beside it), but its limit is the GPU's real memory,
// as on the extender path; a share that names memory keeps what it named,
// even above the real memory (overcommit).
func TestSharesLimitUnnamedMemoryToTheGPU(t *testing.T) {
	gpu := GPU{UUID: "GPU-a", MemoryMiB: 40960}
	scaled := MiB(61440) // 40960 × 1.5
	claimFor := func(c request.Container, models []Model, consumed resource.Quantity, req string) *resourcev1.ResourceClaim {
		spec, err := ClaimSpec(c, request.Selector{}, models)
		if err != nil {
			t.Fatal(err)
		}
		return &resourcev1.ResourceClaim{Spec: spec, Status: resourcev1.ResourceClaimStatus{Allocation: &resourcev1.AllocationResult{
			Devices: resourcev1.DeviceAllocationResult{Config: allocConfig(spec), Results: []resourcev1.DeviceRequestAllocationResult{{
				Request: req, Driver: Driver, Pool: "n1", Device: "gpu-0",
				ConsumedCapacity: map[resourcev1.QualifiedName]resource.Quantity{CapMemory: consumed}}}}}}}
	}
	lookup := func(string, string) (GPU, bool) { return gpu, true }
	models := []Model{{Name: "A100", MemoryMiB: 40960}}
	for _, tc := range []struct {
		name  string
		claim *resourcev1.ResourceClaim
		want  int64
	}{
		{"gpucores alone", claimFor(request.Container{Name: "c", Count: 1, Cores: 30}, nil, scaled, RequestName), 40960},
		{"whole GPU", claimFor(request.Container{Name: "c", Count: 1, Exclusive: true}, nil, scaled, RequestName), 40960},
		{"whole GPU with gpumem", claimFor(request.Container{Name: "c", Count: 1, Exclusive: true, MemoryMiB: 1000}, nil, scaled, RequestName), 1000},
		{"gpumem above the real memory", claimFor(request.Container{Name: "c", Count: 1, MemoryMiB: 50000}, nil, MiB(50000), RequestName), 50000},
		{"gpumem-percentage", claimFor(request.Container{Name: "c", Count: 1, MemoryPercent: 50}, models, MiB(20480), RequestName+"/model-0"), 20480},
	} {
		shares, err := Shares(tc.claim, lookup)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(shares) != 1 || len(shares[0].Devices) != 1 || shares[0].Devices[0].MemoryMiB != tc.want {
			t.Errorf("%s: shares %+v: want a memory limit of %d MiB", tc.name, shares, tc.want)
		}
	}
}

// allocConfig is the allocation's copy of the claim's configs.
func allocConfig(spec resourcev1.ResourceClaimSpec) []resourcev1.DeviceAllocationConfiguration {
	var out []resourcev1.DeviceAllocationConfiguration
	for _, c := range spec.Devices.Config {
		out = append(out, resourcev1.DeviceAllocationConfiguration{Source: resourcev1.AllocationConfigSourceClaim, Requests: c.Requests, DeviceConfiguration: c.DeviceConfiguration})
	}
	return out
}
