// Package request turns a pod spec into what vgpu must place: per container
// how many vGPUs, how much memory and compute each takes, and the pod's GPU
// selectors and policy overrides (docs/resources.md). It applies the defaults and
// validates everything that can be judged from the pod alone; the webhook
// denies on its errors and the extender schedules on its result.
package request

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/kubescore"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// ErrNoGPU is returned by FromPod for a pod that asks for no vGPU at all. It
// is not a validation failure: such a pod is simply none of vgpu's business.
var ErrNoGPU = errors.New("pod requests no vGPU")

// MaxCount bounds nvidia.com/gpu per container; more GPUs than this in one
// node does not exist, so a larger number is a typo.
const MaxCount = 128

// Container is what one container asks for. A container that asks for no
// vGPU is not listed in Pod at all.
type Container struct {
	Name string
	Init bool
	// Sidecar marks a restartable init container (restartPolicy: Always):
	// it starts in init order but then runs beside the app containers for
	// the pod's whole life, so its share adds to theirs and to every init
	// container declared after it (docs/contract.md). Init is also set.
	Sidecar bool
	// Count is the number of vGPUs, each on a different physical GPU.
	Count int
	// MemoryMiB is the memory per vGPU in MiB; 0 when not given.
	MemoryMiB int64
	// MemoryPercent is the memory per vGPU as 1–100 % of the GPU it lands
	// on; 0 when not given. When neither it nor MemoryMiB is given the
	// container gets the GPU's full memory.
	MemoryPercent int
	// Cores is the SM share per vGPU, 1–100; 0 means no limit on a shared GPU.
	Cores int
	// Exclusive means the container takes each of its GPUs whole: no other
	// pod may share them. It is set by `nvidia.com/gpu` alone or gpucores=100.
	Exclusive bool
}

// MemoryOn is the memory in MiB the container gets on a GPU of memMiB.
// Percentages resolve against each GPU's own memory, rounded down, at least 1.
func (c *Container) MemoryOn(memMiB int64) int64 {
	switch {
	case c.MemoryMiB > 0:
		return c.MemoryMiB
	case c.MemoryPercent > 0:
		m := memMiB * int64(c.MemoryPercent) / 100
		if m < 1 {
			m = 1
		}
		return m
	default:
		return memMiB
	}
}

// CoresOn is the SM share written in the assignment: 100 for an exclusive
// container, its gpucores otherwise (0 = unlimited).
func (c *Container) CoresOn() int {
	if c.Exclusive {
		return 100
	}
	return c.Cores
}

// Selector restricts the GPUs a pod may land on, from its annotations.
// Types match case-insensitively as substrings of the GPU model; uuids match
// exactly (case-insensitively). Empty lists do not restrict.
type Selector struct {
	UseTypes   []string
	NoUseTypes []string
	UseUUIDs   []string
	NoUseUUIDs []string
}

// Allows reports whether a GPU of this model and uuid may be used. It does
// not allocate: the extender calls it for every GPU of every node.
func (s *Selector) Allows(model, uuid string) bool {
	if len(s.UseTypes) > 0 && !anySubstring(model, s.UseTypes) {
		return false
	}
	if anySubstring(model, s.NoUseTypes) {
		return false
	}
	if len(s.UseUUIDs) > 0 && !anyEqualFold(uuid, s.UseUUIDs) {
		return false
	}
	return !anyEqualFold(uuid, s.NoUseUUIDs)
}

// Empty reports whether the selector restricts nothing.
func (s *Selector) Empty() bool {
	return len(s.UseTypes)+len(s.NoUseTypes)+len(s.UseUUIDs)+len(s.NoUseUUIDs) == 0
}

func anySubstring(model string, list []string) bool {
	for _, t := range list {
		if containsFold(model, t) {
			return true
		}
	}
	return false
}

// containsFold is a case-insensitive strings.Contains for the ASCII model
// names GPUs report.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

func anyEqualFold(uuid string, list []string) bool {
	for _, u := range list {
		if strings.EqualFold(uuid, u) {
			return true
		}
	}
	return false
}

// Pod is everything vgpu needs to place one pod.
type Pod struct {
	// Containers that ask for vGPUs: init containers first, in spec order,
	// then app containers in spec order.
	Containers []Container
	Selector   Selector
	// NodePolicy and GPUPolicy override the cluster defaults; "" = default.
	NodePolicy settings.Policy
	GPUPolicy  settings.Policy
	// HostCPUMilli and HostMemoryMiB are the pod's CPU and memory requests
	// as kube-scheduler counts them (app containers summed, or the largest
	// init container): the fragmentation policy asks whether a node keeps
	// room for the pods it expects (docs/placement.md).
	HostCPUMilli, HostMemoryMiB int64
}

// Policies returns the pod's policies, falling back to the given defaults.
func (p *Pod) Policies(defNode, defGPU settings.Policy) (node, gpu settings.Policy) {
	node, gpu = defNode, defGPU
	if p.NodePolicy != "" {
		node = p.NodePolicy
	}
	if p.GPUPolicy != "" {
		gpu = p.GPUPolicy
	}
	return node, gpu
}

// FromPod parses and validates a pod. It returns ErrNoGPU when no container
// asks for a vgpu resource, and otherwise every problem found, joined with
// errors.Join, so that an admission denial can list them all at once.
func FromPod(pod *corev1.Pod) (*Pod, error) {
	var errs []error
	p := &Pod{}
	add := func(cs []corev1.Container, init bool) {
		for i := range cs {
			c, ok, err := parseContainer(&cs[i], init)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if ok {
				c.Sidecar = init && IsSidecar(&cs[i])
				p.Containers = append(p.Containers, c)
			}
		}
	}
	add(pod.Spec.InitContainers, true)
	add(pod.Spec.Containers, false)
	if len(errs) == 0 && len(p.Containers) == 0 {
		return nil, ErrNoGPU
	}
	if err := parseAnnotations(pod.Annotations, p); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p.HostCPUMilli, p.HostMemoryMiB = kubescore.HostRequests(pod)
	return p, nil
}

// IsSidecar reports whether an init container is restartable (a native
// sidecar): restartPolicy Always.
func IsSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// RunsWithApp reports whether the container runs beside the app containers:
// an app container or a sidecar.
func (c *Container) RunsWithApp() bool { return !c.Init || c.Sidecar }

// VGPUs is the pod's nvidia.com/gpu as kube-scheduler counts an extended
// resource: the app containers and all sidecars summed, or, if larger, an
// ordinary init container's with the sidecars declared before it.
func (p *Pod) VGPUs() int {
	app, side, init := 0, 0, 0
	for _, c := range p.Containers {
		switch {
		case c.Sidecar:
			side += c.Count
		case c.Init:
			init = max(init, c.Count+side)
		default:
			app += c.Count
		}
	}
	return max(app+side, init)
}

// CheckMemoryFits reports the containers whose gpumem exceeds the largest GPU
// memory in the cluster, largestMiB (after memory scaling, if the caller
// wants overcommitted memory to count). Such a pod could never be placed.
func CheckMemoryFits(p *Pod, largestMiB int64) error {
	var errs []error
	for _, c := range p.Containers {
		if c.MemoryMiB > largestMiB {
			errs = append(errs, fmt.Errorf("%s: %s=%d: must be at most %d, the memory of the largest GPU in the cluster",
				containerRef(c.Name, c.Init), contract.ResourceMemory, c.MemoryMiB, largestMiB))
		}
	}
	return errors.Join(errs...)
}

// Ref names the container in messages: `container "x"` or
// `init container "x"`.
func (c *Container) Ref() string { return containerRef(c.Name, c.Init) }

func containerRef(name string, init bool) string {
	if init {
		return fmt.Sprintf("init container %q", name)
	}
	return fmt.Sprintf("container %q", name)
}

// parseContainer returns ok=false for a container that asks for nothing.
func parseContainer(ctr *corev1.Container, init bool) (Container, bool, error) {
	ref := containerRef(ctr.Name, init)
	var errs []error
	vals := map[string]int64{}
	for _, name := range contract.Resources {
		rn := corev1.ResourceName(name)
		lim, hasLim := ctr.Resources.Limits[rn]
		req, hasReq := ctr.Resources.Requests[rn]
		switch {
		case !hasLim && !hasReq:
			continue
		case !hasLim:
			errs = append(errs, fmt.Errorf("%s: %s is set in requests only: set it in limits (requests, if given, must equal limits)", ref, name))
			continue
		case hasReq && req.Cmp(lim) != 0:
			errs = append(errs, fmt.Errorf("%s: %s: requests %s differ from limits %s: they must be equal", ref, name, req.String(), lim.String()))
			continue
		}
		v, err := integer(lim)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s=%s: %s", ref, name, lim.String(), rangeText(name)))
			continue
		}
		vals[name] = v
	}
	if len(errs) > 0 {
		return Container{}, false, errors.Join(errs...)
	}
	if len(vals) == 0 {
		return Container{}, false, nil
	}
	c := Container{Name: ctr.Name, Init: init, Count: 1}
	check := func(name string, lo, hi int64) int64 {
		v, ok := vals[name]
		if !ok {
			return 0
		}
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s: %s=%d: %s", ref, name, v, rangeText(name)))
			return 0
		}
		return v
	}
	if v, ok := vals[contract.ResourceGPU]; ok {
		if v == 0 && len(vals) == 1 {
			// gpu: 0 alone asks for nothing, as with the plain device plugin.
			return Container{}, false, nil
		}
		c.Count = int(check(contract.ResourceGPU, 1, MaxCount))
	}
	c.MemoryMiB = check(contract.ResourceMemory, 1, 1<<40)
	c.MemoryPercent = int(check(contract.ResourceMemoryPercentage, 1, 100))
	c.Cores = int(check(contract.ResourceCores, 1, 100))
	_, hasMem := vals[contract.ResourceMemory]
	_, hasPct := vals[contract.ResourceMemoryPercentage]
	_, hasCores := vals[contract.ResourceCores]
	if hasMem && hasPct {
		errs = append(errs, fmt.Errorf("%s: %s and %s are both set: set only one of them", ref, contract.ResourceMemory, contract.ResourceMemoryPercentage))
	}
	c.Exclusive = (!hasMem && !hasPct && !hasCores) || c.Cores == 100
	if ctr.SecurityContext != nil && ctr.SecurityContext.Privileged != nil && *ctr.SecurityContext.Privileged && !c.Exclusive {
		errs = append(errs, fmt.Errorf("%s: privileged containers see every GPU of the node and cannot be limited: ask for whole GPUs (%s alone) or drop privileged", ref, contract.ResourceGPU))
	}
	if len(errs) > 0 {
		return Container{}, false, errors.Join(errs...)
	}
	return c, true, nil
}

// integer returns the quantity as a whole number, or an error for fractions
// ("1.5", "500m") and values too large for int64.
func integer(q resource.Quantity) (int64, error) {
	v, ok := q.AsInt64()
	if !ok {
		return 0, errors.New("not an integer")
	}
	return v, nil
}

func rangeText(name string) string {
	switch name {
	case contract.ResourceGPU:
		return fmt.Sprintf("must be an integer from 1 to %d", MaxCount)
	case contract.ResourceMemory:
		return "must be a whole number of MiB, at least 1"
	default: // percentage and cores
		return "must be an integer from 1 to 100"
	}
}

func parseAnnotations(ann map[string]string, p *Pod) error {
	var errs []error
	list := func(key string) []string {
		v, ok := ann[key]
		if !ok {
			return nil
		}
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		if len(out) == 0 {
			errs = append(errs, fmt.Errorf("annotation %s=%q: must be a comma-separated list of at least one value", key, v))
		}
		return out
	}
	p.Selector = Selector{
		UseTypes:   list(contract.AnnotationUseGPUType),
		NoUseTypes: list(contract.AnnotationNoUseGPUType),
		UseUUIDs:   list(contract.AnnotationUseGPUUUID),
		NoUseUUIDs: list(contract.AnnotationNoUseGPUUUID),
	}
	policy := func(key string) settings.Policy {
		v, ok := ann[key]
		if !ok {
			return ""
		}
		pol, err := settings.ParsePolicy(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: %v", key, err))
		}
		return pol
	}
	p.NodePolicy = policy(contract.AnnotationNodePolicy)
	p.GPUPolicy = policy(contract.AnnotationGPUPolicy)
	return errors.Join(errs...)
}
