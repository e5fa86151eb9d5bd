package dra

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/request"
)

// RequestName is the one device request of a claim the webhook writes.
const RequestName = "gpu"

// ConfigAPIVersion and ConfigKind identify the opaque per-claim config that
// carries a memory limit the booking does not show (a whole GPU with gpumem).
const (
	ConfigAPIVersion = Driver + "/v1alpha1"
	ConfigKind       = "ShareConfig"
)

// ShareConfig is the opaque config of a claim (docs/dra.md).
type ShareConfig struct {
	APIVersion    string `json:"apiVersion"`
	Kind          string `json:"kind"`
	MemoryMiB     int64  `json:"memoryMiB,omitempty"`
	MemoryPercent int    `json:"memoryPercent,omitempty"`
}

// Model is one kind of GPU in the cluster: the percentage of gpumem-percentage
// resolves against its memory.
type Model struct {
	Name      string
	MemoryMiB int64
}

// MaxModels is how many alternatives a prioritized list may hold.
const MaxModels = resourcev1.FirstAvailableDeviceRequestMaxSize

// attr is the CEL path of one of vgpu's device attributes.
func attr(name string) string {
	return fmt.Sprintf("device.attributes[%q].%s", Driver, name)
}

// ClaimSpec is the claim one container's request becomes
// (docs/dra.md#how-seed-style-pods-map-to-claims). models are the GPU kinds
// the cluster has; only a memory percentage needs them.
func ClaimSpec(c request.Container, sel request.Selector, models []Model) (resourcev1.ResourceClaimSpec, error) {
	if c.Count < 1 {
		return resourcev1.ResourceClaimSpec{}, fmt.Errorf("%s: asks for %d vGPUs", c.Ref(), c.Count)
	}
	if c.Count > resourcev1.AllocationResultsMaxSize {
		// The allocator fails such a claim on every node: the pod would
		// stay pending for good.
		return resourcev1.ResourceClaimSpec{}, fmt.Errorf("%s: %s=%d: must be at most %d on the DRA path, the devices one ResourceClaim allocation holds",
			c.Ref(), contract.ResourceGPU, c.Count, resourcev1.AllocationResultsMaxSize)
	}
	selectors := selectorsCEL(sel)
	for i, src := range selectorSources(sel) {
		if n := len(selectors[i].CEL.Expression); n > resourcev1.CELSelectorExpressionMaxLength {
			// The API server would refuse the template.
			return resourcev1.ResourceClaimSpec{}, fmt.Errorf("%s: annotation %s: lists too much for the DRA path: its CEL selector would be %d bytes, more than the %d a claim may hold",
				c.Ref(), src, n, resourcev1.CELSelectorExpressionMaxLength)
		}
	}
	capReq := map[resourcev1.QualifiedName]resource.Quantity{}
	var config []resourcev1.DeviceClaimConfiguration
	var alternatives []Model
	switch {
	case c.Exclusive:
		// No memory request books all of it; nothing else fits beside.
		capReq[CapCores] = *resource.NewQuantity(100, resource.DecimalSI)
		if c.MemoryMiB > 0 || c.MemoryPercent > 0 {
			raw, _ := json.Marshal(ShareConfig{APIVersion: ConfigAPIVersion, Kind: ConfigKind, MemoryMiB: c.MemoryMiB, MemoryPercent: c.MemoryPercent})
			config = []resourcev1.DeviceClaimConfiguration{{Requests: []string{RequestName},
				DeviceConfiguration: resourcev1.DeviceConfiguration{Opaque: &resourcev1.OpaqueDeviceConfiguration{Driver: Driver, Parameters: runtime.RawExtension{Raw: raw}}}}}
		}
	default:
		if c.Cores > 0 {
			capReq[CapCores] = *resource.NewQuantity(int64(c.Cores), resource.DecimalSI)
		}
		if c.MemoryMiB > 0 {
			capReq[CapMemory] = MiB(c.MemoryMiB)
		}
		if c.MemoryPercent > 0 {
			var err error
			if alternatives, err = modelsFor(c, sel, models); err != nil {
				return resourcev1.ResourceClaimSpec{}, err
			}
		}
	}
	req := resourcev1.DeviceRequest{Name: RequestName}
	if alternatives == nil {
		req.Exactly = &resourcev1.ExactDeviceRequest{DeviceClassName: DeviceClass, Selectors: selectors,
			AllocationMode: resourcev1.DeviceAllocationModeExactCount, Count: int64(c.Count), Capacity: capacity(capReq)}
	} else {
		for i, m := range alternatives {
			// Naming the model's capacity keeps the alternative on that
			// model without a CEL selector (see ModelCapacity).
			r := map[resourcev1.QualifiedName]resource.Quantity{CapMemory: MiB(c.MemoryOn(m.MemoryMiB)),
				ModelCapacity(m): *resource.NewQuantity(0, resource.DecimalSI)}
			if q, ok := capReq[CapCores]; ok {
				r[CapCores] = q
			}
			req.FirstAvailable = append(req.FirstAvailable, resourcev1.DeviceSubRequest{Name: fmt.Sprintf("model-%d", i),
				DeviceClassName: DeviceClass, Selectors: selectors, AllocationMode: resourcev1.DeviceAllocationModeExactCount,
				Count: int64(c.Count), Capacity: capacity(r)})
		}
	}
	spec := resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{req}, Config: config}}
	if c.Count > 1 {
		// A shareable GPU may otherwise be taken twice by one request.
		spec.Devices.Constraints = []resourcev1.DeviceConstraint{{Requests: []string{RequestName},
			DistinctAttribute: ptr(resourcev1.FullyQualifiedName(Driver + "/" + AttrUUID))}}
	}
	return spec, nil
}

func capacity(r map[resourcev1.QualifiedName]resource.Quantity) *resourcev1.CapacityRequirements {
	if len(r) == 0 {
		return nil
	}
	return &resourcev1.CapacityRequirements{Requests: r}
}

// modelsFor picks the models a percentage may resolve against: distinct,
// allowed by the pod's type selector, in a stable order.
func modelsFor(c request.Container, sel request.Selector, models []Model) ([]Model, error) {
	var out []Model
	for _, m := range models {
		// The uuid part of the selector cannot judge a model; CEL does.
		typesOnly := request.Selector{UseTypes: sel.UseTypes, NoUseTypes: sel.NoUseTypes}
		if typesOnly.Allows(m.Name, "") && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b Model) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.MemoryMiB, b.MemoryMiB))
	})
	switch {
	case len(out) == 0 && len(models) == 0:
		return nil, fmt.Errorf("%s: gpumem-percentage: no node has published a GPU yet, so the percentage cannot be resolved; retry once the node agents run", c.Ref())
	case len(out) == 0:
		return nil, fmt.Errorf("%s: gpumem-percentage: no GPU model in the cluster matches the pod's GPU type selector", c.Ref())
	case len(out) > MaxModels:
		return nil, fmt.Errorf("%s: gpumem-percentage: the pod may land on %d GPU models, more than the %d alternatives a claim may list; narrow it with %s or use gpumem", c.Ref(), len(out), MaxModels, "nvidia.com/use-gputype")
	}
	return out, nil
}

// selectorsCEL turns the pod's GPU type and uuid annotations into CEL.
func selectorsCEL(s request.Selector) []resourcev1.DeviceSelector {
	var out []resourcev1.DeviceSelector
	model := attr(AttrModel) + ".lowerAscii()"
	anyType := func(types []string) string {
		parts := make([]string, len(types))
		for i, t := range types {
			parts[i] = fmt.Sprintf("%s.contains(%s)", model, strconv.Quote(strings.ToLower(t)))
		}
		return strings.Join(parts, " || ")
	}
	uuids := func(list []string) string {
		q := make([]string, len(list))
		for i, u := range list {
			q[i] = strconv.Quote(strings.ToLower(u))
		}
		return fmt.Sprintf("%s.lowerAscii() in [%s]", attr(AttrUUID), strings.Join(q, ", "))
	}
	if len(s.UseTypes) > 0 {
		out = append(out, cel(anyType(s.UseTypes)))
	}
	if len(s.NoUseTypes) > 0 {
		out = append(out, cel("!("+anyType(s.NoUseTypes)+")"))
	}
	if len(s.UseUUIDs) > 0 {
		out = append(out, cel(uuids(s.UseUUIDs)))
	}
	if len(s.NoUseUUIDs) > 0 {
		out = append(out, cel("!("+uuids(s.NoUseUUIDs)+")"))
	}
	return out
}

// selectorSources names the annotation behind each of selectorsCEL's
// selectors, in the same order.
func selectorSources(s request.Selector) []string {
	var out []string
	for _, a := range []struct {
		list []string
		key  string
	}{{s.UseTypes, contract.AnnotationUseGPUType}, {s.NoUseTypes, contract.AnnotationNoUseGPUType},
		{s.UseUUIDs, contract.AnnotationUseGPUUUID}, {s.NoUseUUIDs, contract.AnnotationNoUseGPUUUID}} {
		if len(a.list) > 0 {
			out = append(out, a.key)
		}
	}
	return out
}

func cel(expr string) resourcev1.DeviceSelector {
	return resourcev1.DeviceSelector{CEL: &resourcev1.CELDeviceSelector{Expression: expr}}
}

// TemplateName names the ResourceClaimTemplate holding spec, so that pods
// asking for the same thing share one template.
func TemplateName(spec resourcev1.ResourceClaimSpec) string {
	raw, _ := json.Marshal(spec)
	sum := sha256.Sum256(raw)
	return "vgpu-" + hex.EncodeToString(sum[:8])
}

// ModelsOf lists the GPU kinds in the slices of vgpu's driver, and the
// largest memory capacity (scaled) any of their GPUs offers.
func ModelsOf(slices []*resourcev1.ResourceSlice) (models []Model, largestMiB int64) {
	seen := map[Model]bool{}
	for _, s := range slices {
		if s.Spec.Driver != Driver {
			continue
		}
		for _, d := range s.Spec.Devices {
			name, mem := d.Attributes[AttrModel].StringValue, d.Attributes[AttrMemoryMiB].IntValue
			if name == nil || mem == nil {
				continue
			}
			if m := (Model{Name: *name, MemoryMiB: *mem}); !seen[m] {
				seen[m] = true
				models = append(models, m)
			}
			if c, ok := d.Capacity[CapMemory]; ok {
				largestMiB = max(largestMiB, c.Value.Value()/(1024*1024))
			}
		}
	}
	return models, largestMiB
}
