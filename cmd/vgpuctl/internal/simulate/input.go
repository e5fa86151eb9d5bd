package simulate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/vgpu-io/vgpu/cmd/vgpuctl/internal/simulate/openb"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/kubescore"
	"github.com/vgpu-io/vgpu/lib/request"
)

// Node is a simulated node: its GPUs and what the kube-scheduler also
// checks, CPU and host memory (0 = unlimited).
type Node struct {
	Name      string
	CPUMilli  int64
	MemoryMiB int64
	GPUs      []device.GPU
	// SplitCount and MemoryScaling, when set, are the node's own (a live
	// node's inventory); otherwise the replay's options apply.
	SplitCount    int
	MemoryScaling float64
}

// Cluster is the nodes a workload is replayed against.
type Cluster struct {
	Source string
	Nodes  []Node
}

// GPUCount is the number of GPUs, the capacity the percentages refer to.
func (c *Cluster) GPUCount() int {
	n := 0
	for _, nd := range c.Nodes {
		n += len(nd.GPUs)
	}
	return n
}

// Task is one pod of a workload.
type Task struct {
	Name      string
	CPUMilli  int64
	MemoryMiB int64
	// Pod is nil for a CPU-only task.
	Pod *request.Pod
	// Shape is the pod as the fragmentation policy's mix counts it: Pod,
	// or for a CPU-only task a pod without containers that asks for its
	// CPU and memory.
	Shape *request.Pod
	// DemandMilli is the GPU demand in thousandths of a GPU: the trace's own
	// figure for openb, estimated from the request for pod specs.
	DemandMilli int64
	// ShareMilli is, per app container name, the thousandths of a GPU each
	// of its vGPUs takes (1000 for a whole GPU).
	ShareMilli map[string]int64
	// Created and Deleted are the trace's times in seconds, for the churn
	// replay; HasTimes is false where the workload gives none.
	Created, Deleted int64
	HasTimes         bool
	// Object is the pod as the workload file wrote it (YAML workloads
	// only), for the what-if's model of kube-scheduler.
	Object *corev1.Pod
}

// Workload is the tasks to replay, before shuffling.
type Workload struct {
	Source string
	Tasks  []Task
}

// OpenBGPUMemoryMiB is the memory assumed per openb GPU model. The trace
// gives none; the public figures are used, and 24 GiB (G2) and 32 GiB (G3)
// for the undisclosed models. openb tasks ask for percentages of a GPU, so
// these values change no openb result; they matter only for pod specs that
// ask for gpumem in MiB.
var OpenBGPUMemoryMiB = map[string]int64{
	"P100": 16384, "T4": 16384, "V100M16": 16384, "V100M32": 32768, "A10": 24576,
	"G2": 24576, "G3": 32768,
}

// ClusterFromOpenB builds a cluster from the openb node list.
func ClusterFromOpenB(source string, nodes []openb.Node, memMiB map[string]int64) (*Cluster, error) {
	c := &Cluster{Source: source}
	for _, n := range nodes {
		mem, ok := memMiB[n.Model]
		if !ok && n.GPUs > 0 {
			return nil, fmt.Errorf("node %s: GPU model %q has no memory size: known models are %s", n.Name, n.Model, strings.Join(sortedKeys(memMiB), ", "))
		}
		nd := Node{Name: n.Name, CPUMilli: n.CPUMilli, MemoryMiB: n.MemoryMiB}
		for i := 0; i < n.GPUs; i++ {
			nd.GPUs = append(nd.GPUs, device.GPU{UUID: fmt.Sprintf("%s-gpu%d", n.Name, i), Index: i, Model: n.Model, MemoryMiB: mem, NUMANode: -1, Healthy: true})
		}
		c.Nodes = append(c.Nodes, nd)
	}
	return c, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// clusterFile is the YAML cluster format.
type clusterFile struct {
	Nodes []struct {
		Name   string            `json:"name"`
		Count  int               `json:"count"`
		CPU    resource.Quantity `json:"cpu"`
		Memory resource.Quantity `json:"memory"`
		GPUs   []struct {
			Model     string `json:"model"`
			MemoryMiB int64  `json:"memoryMiB"`
			Count     int    `json:"count"`
		} `json:"gpus"`
	} `json:"nodes"`
}

// ReadClusterYAML parses the YAML cluster format:
//
//	nodes:
//	- name: a100      # with count > 1: a100-0, a100-1, …
//	  count: 2
//	  cpu: "64"       # optional, default unlimited
//	  memory: 512Gi   # optional, default unlimited
//	  gpus:
//	  - {model: A100-SXM4-40GB, memoryMiB: 40960, count: 8}
func ReadClusterYAML(source string, data []byte) (*Cluster, error) {
	var f clusterFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %v", source, err)
	}
	c := &Cluster{Source: source}
	seen := map[string]bool{}
	for i, n := range f.Nodes {
		if n.Name == "" {
			return nil, fmt.Errorf("%s: nodes[%d]: name is empty", source, i)
		}
		count := max(n.Count, 1)
		for k := 0; k < count; k++ {
			nd := Node{Name: n.Name, CPUMilli: n.CPU.MilliValue(), MemoryMiB: n.Memory.Value() >> 20}
			if n.Count > 1 {
				nd.Name = fmt.Sprintf("%s-%d", n.Name, k)
			}
			if seen[nd.Name] {
				return nil, fmt.Errorf("%s: nodes[%d]: node %s defined twice", source, i, nd.Name)
			}
			seen[nd.Name] = true
			for j, g := range n.GPUs {
				if g.Model == "" || g.MemoryMiB <= 0 {
					return nil, fmt.Errorf("%s: node %s: gpus[%d]: model and a positive memoryMiB are required", source, n.Name, j)
				}
				for x := 0; x < max(g.Count, 1); x++ {
					idx := len(nd.GPUs)
					nd.GPUs = append(nd.GPUs, device.GPU{UUID: fmt.Sprintf("%s-gpu%d", nd.Name, idx), Index: idx, Model: g.Model, MemoryMiB: g.MemoryMiB, NUMANode: -1, Healthy: true})
				}
			}
			c.Nodes = append(c.Nodes, nd)
		}
	}
	if len(c.Nodes) == 0 {
		return nil, fmt.Errorf("%s: no nodes", source)
	}
	return c, nil
}

// AnnotationReplicas on a pod of a workload file makes it count as that
// many identical pods.
const AnnotationReplicas = "simulate.vgpu.io/replicas"

// ReadWorkloadYAML parses a stream of Pod documents (separated by ---).
// refMemMiB is the GPU memory used to turn gpumem in MiB into a demand.
func ReadWorkloadYAML(source string, data []byte, refMemMiB int64) (*Workload, error) {
	w := &Workload{Source: source}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for doc := 1; ; doc++ {
		var pod corev1.Pod
		if err := dec.Decode(&pod); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("%s: document %d: %v", source, doc, err)
		}
		if pod.Kind != "" && pod.Kind != "Pod" {
			return nil, fmt.Errorf("%s: document %d: kind %q: only Pod documents are read", source, doc, pod.Kind)
		}
		if pod.Name == "" {
			pod.Name = fmt.Sprintf("pod-%d", doc)
		}
		replicas := 1
		if v, ok := pod.Annotations[AnnotationReplicas]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100000 {
				return nil, fmt.Errorf("%s: pod %s: annotation %s=%q: must be an integer from 1 to 100000", source, pod.Name, AnnotationReplicas, v)
			}
			replicas = n
		}
		t, err := taskFromPod(&pod, refMemMiB)
		if err != nil {
			return nil, fmt.Errorf("%s: pod %s: %w", source, pod.Name, err)
		}
		t.Object = &pod
		for i := 0; i < replicas; i++ {
			w.Tasks = append(w.Tasks, t)
		}
	}
	if len(w.Tasks) == 0 {
		return nil, fmt.Errorf("%s: no pods", source)
	}
	return w, nil
}

// taskFromPod parses the pod with the same code as the webhook and extender.
func taskFromPod(pod *corev1.Pod, refMemMiB int64) (Task, error) {
	t := Task{Name: pod.Name}
	t.CPUMilli, t.MemoryMiB = kubescore.HostRequests(pod)
	req, err := request.FromPod(pod)
	if errors.Is(err, request.ErrNoGPU) {
		t.Shape = &request.Pod{HostCPUMilli: t.CPUMilli, HostMemoryMiB: t.MemoryMiB}
		return t, nil
	}
	if err != nil {
		return t, err
	}
	if err := request.CheckMemoryFits(req, 1<<40); err != nil {
		return t, err
	}
	t.Pod = req
	t.Shape = req
	t.ShareMilli = map[string]int64{}
	for _, c := range req.Containers {
		if !c.RunsWithApp() {
			continue
		}
		share := shareMilli(&c, refMemMiB)
		t.ShareMilli[c.Name] = share
		t.DemandMilli += int64(c.Count) * share
	}
	return t, nil
}

// shareMilli estimates the thousandths of a GPU one vGPU of c takes: its
// larger fraction of compute and memory, memory in MiB counted against
// refMemMiB, a whole GPU for an exclusive container.
func shareMilli(c *request.Container, refMemMiB int64) int64 {
	if c.Exclusive {
		return 1000
	}
	mem := 1000.0
	switch {
	case c.MemoryPercent > 0:
		mem = float64(c.MemoryPercent) * 10
	case c.MemoryMiB > 0:
		mem = math.Min(1000, float64(c.MemoryMiB)*1000/float64(refMemMiB))
	}
	return int64(math.Ceil(math.Max(mem, float64(c.Cores)*10)))
}

// WorkloadFromOpenB turns trace tasks into pods as a user would write them,
// then parses those with lib/request:
//
//   - num_gpu 1, gpu_milli < 1000: gpucores = gpumem-percentage =
//     gpu_milli/10 rounded up;
//   - num_gpu N of whole GPUs: nvidia.com/gpu: N alone (exclusive);
//   - gpu_spec: the nvidia.com/use-gputype annotation;
//   - cpu_milli and memory_mib: the container's CPU and memory requests.
func WorkloadFromOpenB(source string, tasks []openb.Task) (*Workload, error) {
	w := &Workload{Source: source, Tasks: make([]Task, 0, len(tasks))}
	shapes := map[string]*request.Pod{}
	for _, ot := range tasks {
		pod := OpenBPod(ot)
		t, err := taskFromPod(pod, 1)
		if err != nil {
			return nil, fmt.Errorf("%s: task %s: %w", source, ot.Name, err)
		}
		// Identical requests share one *request.Pod, which lets the replay
		// reuse scores of unchanged nodes.
		key := fmt.Sprintf("%d/%d/%s/%d/%d", ot.NumGPU, ot.GPUMilli, strings.Join(ot.GPUSpec, "|"), ot.CPUMilli, ot.MemoryMiB)
		if p, ok := shapes[key]; ok {
			t.Shape = p
		} else {
			shapes[key] = t.Shape
		}
		if t.Pod != nil {
			t.Pod = t.Shape
			t.DemandMilli = ot.DemandMilli()
			share := int64(1000)
			if ot.Shares() {
				share = int64(ot.GPUMilli)
			}
			t.ShareMilli = map[string]int64{openbContainer: share}
		}
		t.Created, t.Deleted, t.HasTimes = ot.Created, ot.Deleted, ot.HasTimes
		w.Tasks = append(w.Tasks, t)
	}
	return w, nil
}

const openbContainer = "task"

// OpenBPod is the pod spec an openb task stands for.
func OpenBPod(t openb.Task) *corev1.Pod {
	c := corev1.Container{Name: openbContainer, Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewMilliQuantity(t.CPUMilli, resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(t.MemoryMiB<<20, resource.BinarySI),
		},
	}}
	limits := corev1.ResourceList{}
	switch {
	case t.Shares():
		pct := *resource.NewQuantity(int64((t.GPUMilli+9)/10), resource.DecimalSI)
		limits[contract.ResourceCores] = pct
		limits[contract.ResourceMemoryPercentage] = pct
	case t.NumGPU > 0:
		limits[contract.ResourceGPU] = *resource.NewQuantity(int64(t.NumGPU), resource.DecimalSI)
	}
	if len(limits) > 0 {
		c.Resources.Limits = limits
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: t.Name}, Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
	if len(t.GPUSpec) > 0 {
		pod.Annotations = map[string]string{contract.AnnotationUseGPUType: strings.Join(t.GPUSpec, ",")}
	}
	return pod
}
