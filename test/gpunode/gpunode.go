// Package gpunode creates simulated GPU nodes for a test cluster: Node
// objects that kwok manages, with nvidia.com/gpu capacity and the
// vgpu.io/devices inventory a device plugin would publish. The GPUs are
// discovered through NVML from vgpu's one simulated catalogue
// (internal/gpumock, go-nvml's mock servers), so names, memory sizes and
// uuids come from the same code path as on a real node, and match what a
// device plugin or monitor simulating the same node finds.
package gpunode

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-io/vgpu/internal/gpumock"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/test/cluster"
)

// Model names a GPU model of the one simulated catalogue (internal/gpumock)
// that the device plugin's and the monitor's --nvml=mock:<model> use too.
type Model string

// The models the tests use; any gpumock model name works.
const (
	A100_40GB  Model = "A100-40GB"
	A100_80GB  Model = "A100-80GB"
	A30        Model = "A30"
	H100_80GB  Model = "H100-80GB"
	H200_141GB Model = "H200-141GB"
	B200       Model = "B200"
	T4         Model = "T4"
)

// MockFlag is the --nvml value under which a device plugin or monitor
// started for a node of spec simulates exactly that node's GPUs.
func MockFlag(model Model, gpus int) string {
	return fmt.Sprintf("mock:%s:%d", strings.ToLower(string(model)), gpus)
}

// Spec describes a group of identical nodes.
type Spec struct {
	// Prefix names the nodes <Prefix>-<i>; default "gpu-node".
	Prefix string
	// Count is the number of nodes (default 1); Start is the first index.
	Count, Start int
	// GPUs per node (default 8) and their model (default A100_80GB).
	GPUs  int
	Model Model
	// SplitCount is how many vGPUs share one GPU (default 10); the node's
	// nvidia.com/gpu capacity is GPUs × SplitCount.
	SplitCount int
	// MemoryScaling > 1 overcommits GPU memory (default 1).
	MemoryScaling float64
	// Labels and Annotations are added to each node.
	Labels, Annotations map[string]string
	// NoInventory leaves out the vgpu.io/devices annotation, as on a node
	// whose device plugin has not reported yet.
	NoInventory bool
}

func (s *Spec) defaults() error {
	if s.Prefix == "" {
		s.Prefix = "gpu-node"
	}
	if s.Count == 0 {
		s.Count = 1
	}
	if s.GPUs == 0 {
		s.GPUs = 8
	}
	if s.Model == "" {
		s.Model = A100_80GB
	}
	if s.SplitCount == 0 {
		s.SplitCount = 10
	}
	if s.MemoryScaling == 0 {
		s.MemoryScaling = 1
	}
	if _, ok := gpumock.Config(string(s.Model)); !ok {
		return fmt.Errorf("gpunode: model %q unknown; known models: %v", s.Model, gpumock.Models())
	}
	if s.Count < 0 || s.GPUs < 0 || s.SplitCount < 1 || s.Start < 0 {
		return fmt.Errorf("gpunode: count %d, start %d, gpus %d, splitCount %d: counts must not be negative and splitCount at least 1",
			s.Count, s.Start, s.GPUs, s.SplitCount)
	}
	return nil
}

// Discover returns the GPUs of node, a simulated node of n GPUs of model,
// read through NVML from the catalogue's mock: the GPUs, uuids included,
// that a device plugin or monitor with --nvml=MockFlag(model, n) on that
// node finds.
func Discover(node string, model Model, n int) ([]device.GPU, error) {
	spec, err := gpumock.ParseSpec(fmt.Sprintf("%s:%d", model, n))
	if err != nil {
		return nil, fmt.Errorf("gpunode: %w", err)
	}
	return discover(gpumock.New(spec, node))
}

func discover(lib nvml.Interface) ([]device.GPU, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml init: %v", ret)
	}
	defer lib.Shutdown()
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml device count: %v", ret)
	}
	out := make([]device.GPU, 0, count)
	for i := range count {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml device %d: %v", i, ret)
		}
		uuid, ret := d.GetUUID()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml device %d uuid: %v", i, ret)
		}
		name, ret := d.GetName()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml device %d name: %v", i, ret)
		}
		mem, ret := d.GetMemoryInfo()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml device %d memory: %v", i, ret)
		}
		out = append(out, device.GPU{
			UUID:      uuid,
			Index:     i,
			Model:     name,
			MemoryMiB: int64(mem.Total >> 20),
			// The mock has no PCI topology; -1 is device.GPU's "unknown".
			NUMANode: -1,
			Healthy:  true,
		})
	}
	return out, nil
}

// Node builds the Node object for index i of spec: kwok-managed, with GPU
// capacity and (unless NoInventory) the vgpu.io/devices annotation.
func Node(spec Spec, i int) (*corev1.Node, error) {
	if err := spec.defaults(); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s-%d", spec.Prefix, i)
	gpuList, err := Discover(name, spec.Model, spec.GPUs)
	if err != nil {
		return nil, err
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
				contract.LabelGPUNode:    "true",
			},
			Annotations: map[string]string{
				cluster.KwokNodeAnnotation: "fake",
			},
		},
		Spec: corev1.NodeSpec{
			// kwok hands pod IPs out of the node's CIDR; one /24 each keeps
			// thousands of pods per cluster addressable.
			// No kwok taint: every node of a test cluster is simulated, so
			// test pods need no toleration.
			PodCIDR: fmt.Sprintf("10.%d.%d.0/24", 128+(i>>8)&0x7f, i&0xff),
		},
	}
	n.Spec.PodCIDRs = []string{n.Spec.PodCIDR}
	maps.Copy(n.Labels, spec.Labels)
	maps.Copy(n.Annotations, spec.Annotations)
	if !spec.NoInventory {
		v, err := annotation.EncodeDevices(device.Inventory{GPUs: gpuList, SplitCount: spec.SplitCount, MemoryScaling: spec.MemoryScaling})
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", name, err)
		}
		n.Annotations[contract.AnnotationDevices] = v
	}
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("128"),
		corev1.ResourceMemory: resource.MustParse("1Ti"),
		corev1.ResourcePods:   resource.MustParse("1000"),
		contract.ResourceGPU:  *resource.NewQuantity(int64(spec.GPUs*spec.SplitCount), resource.DecimalSI),
	}
	n.Status.Capacity = res
	n.Status.Allocatable = res.DeepCopy()
	return n, nil
}

// Create creates spec.Count nodes (concurrently, for large clusters) and
// returns their names in index order. It does not wait for them to be
// Ready; see cluster.WaitForNodesReady.
func Create(ctx context.Context, client kubernetes.Interface, spec Spec) ([]string, error) {
	if err := spec.defaults(); err != nil {
		return nil, err
	}
	names := make([]string, spec.Count)
	errs := make([]error, spec.Count)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for k := range spec.Count {
		i := spec.Start + k
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			n, err := Node(spec, i)
			if err == nil {
				_, err = client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					err = fmt.Errorf("node %s already exists", n.Name)
				}
			}
			if n != nil {
				names[k] = n.Name
			}
			errs[k] = err
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("create node %d of %d: %w", k+1, spec.Count, err)
		}
	}
	return names, nil
}
