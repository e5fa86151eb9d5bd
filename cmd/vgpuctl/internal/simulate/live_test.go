package simulate

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vgpu-io/vgpu/internal/testutil"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/kubescore"
)

// liveNode is a node with 32 CPUs and 128 GiB and, unless plain, two A100
// 40 GB at split count 4 as vgpu's device plugin publishes them (the
// inventory annotation, nvidia.com/gpu 8).
func liveNode(t *testing.T, name string, plain bool) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"),
			corev1.ResourceMemory: resource.MustParse("128Gi"), corev1.ResourcePods: resource.MustParse("110")}}}
	if plain {
		return n
	}
	inv := device.Inventory{SplitCount: 4, MemoryScaling: 1}
	for i := 0; i < 2; i++ {
		inv.GPUs = append(inv.GPUs, device.GPU{UUID: name + "-g" + string(rune('0'+i)), Index: i, Model: "A100", MemoryMiB: 40960, NUMANode: -1, Healthy: true})
	}
	raw, err := annotation.EncodeDevices(inv)
	if err != nil {
		t.Fatal(err)
	}
	n.Annotations = map[string]string{contract.AnnotationDevices: raw}
	n.Status.Allocatable[contract.ResourceGPU] = resource.MustParse("8")
	return n
}

// useCluster makes the what-if read objs through a fake clientset.
func useCluster(t *testing.T, objs ...runtime.Object) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	old := newClient
	newClient = func(string, string) (kubernetes.Interface, error) { return cs, nil }
	t.Cleanup(func() { newClient = old })
}

// whatIfJSON runs the what-if with -o json.
func whatIfJSON(t *testing.T, args ...string) *WhatIfReport {
	t.Helper()
	var rep WhatIfReport
	out := runCommand(t, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	return &rep
}

// outcome is pod k's outcome under policy.
func (r *WhatIfReport) outcome(t *testing.T, policy string, k int) Outcome {
	t.Helper()
	for _, p := range r.Policies {
		if p.Policy == policy {
			return p.Pods[k]
		}
	}
	t.Fatalf("no policy %s in the report", policy)
	return Outcome{}
}

var pairs = []string{"binpack/binpack", "binpack/spread", "spread/binpack", "spread/spread"}

const onePod = `apiVersion: v1
kind: Pod
metadata: {name: one}
spec:
  containers:
  - name: c
    resources: {limits: {nvidia.com/gpu: "1"}}
`

// TestWhatIf: node a runs a pod holding GPU a-g0 whole; a new whole-GPU
// pod lands on a's other GPU under binpack and on the empty node b under
// spread; a 3-GPU pod stays pending everywhere (2 GPUs a node), and the
// note says why; the node without vGPUs counts as a node, not as a GPU
// node.
func TestWhatIf(t *testing.T) {
	run := testutil.Pod("run", testutil.Phase(corev1.PodRunning), testutil.Container("c"),
		testutil.Assigned(assign.Pod{Node: "a", Containers: []assign.Container{{Name: "c", Devices: []assign.Device{{UUID: "a-g0", MemoryMiB: 40960, Cores: 100}}}}}))
	useCluster(t, liveNode(t, "a", false), liveNode(t, "b", false), liveNode(t, "plain", true), run)
	workload := writeTemp(t, onePod+`---
apiVersion: v1
kind: Pod
metadata: {name: three}
spec:
  containers:
  - name: c
    resources: {limits: {nvidia.com/gpu: "3"}}
`)
	out := runCommand(t, "--kubeconfig", "x", "--workload", workload, "--policy", "all")
	if !strings.Contains(out, "3 nodes (2 with vGPUs, 4 GPUs), 1 pods bound") {
		t.Fatalf("cluster summary wrong:\n%s", out)
	}
	one := regexp.MustCompile(`(?m)^one\s+(\S+ \S+)\s+(\S+ \S+)\s+(\S+ \S+)`).FindStringSubmatch(out)
	if one == nil || one[1] != "a [a-g1]" || one[3] != "b [b-g0]" {
		t.Fatalf("pod one: want a [a-g1] under binpack/binpack and b [b-g0] under spread/binpack:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^three(\s+pending){6}`).MatchString(out) {
		t.Fatalf("pod three must stay pending under every policy:\n%s", out)
	}
	notes := regexp.MustCompile(`(?m)^  three \(.*\): pending: .*insufficient nvidia.com/gpu \(1 node\)`).FindAllString(out, -1)
	if len(notes) == 0 || !strings.Contains(out, "needs 3 GPU(s)") {
		t.Fatalf("the notes on pod three must say why: 2 GPUs a node, and node plain lacks nvidia.com/gpu:\n%s", out)
	}
}

// TestWhatIfLoadAndTie: two identical GPU nodes, which vgpu's GPU policy
// rates alike for a whole-GPU pod under every binpack/spread pair. Empty,
// they tie: the what-if says the pod lands on one of the two, and names
// both. With node a busy with CPU and memory (a pod without GPUs), the
// CPU/memory load decides, as kube-scheduler's NodeResourcesFit
// (LeastAllocated, whatever vgpu's node policy) and BalancedAllocation
// do: the pod lands on b, under binpack too (where the GPU policy alone,
// ties going to the first name, or a MostAllocated CPU score would say
// a). A CPU-only pod goes to the default scheduler, without vgpu's
// extender, and may land on the node without GPUs.
func TestWhatIfLoadAndTie(t *testing.T) {
	workload := writeTemp(t, onePod)
	t.Run("tie", func(t *testing.T) {
		useCluster(t, liveNode(t, "a", false), liveNode(t, "b", false))
		rep := whatIfJSON(t, "--kubeconfig", "x", "--workload", workload, "--policy", "all")
		for _, p := range pairs {
			o := rep.outcome(t, p, 0)
			if !slices.Equal(o.Tied, []string{"a", "b"}) || o.Node != "a" {
				t.Errorf("%s: pod one on %s, tied %v; want a tie of a and b, the pods after it assuming a", p, o.Node, o.Tied)
			}
		}
		out := runCommand(t, "--kubeconfig", "x", "--workload", workload)
		if !strings.Contains(out, "a [a-g0] (or 1 more)") || !strings.Contains(out, "2 equally good nodes, a, b: kube-scheduler picks one at random") {
			t.Errorf("the table must say the pod may land on either node:\n%s", out)
		}
	})
	t.Run("load", func(t *testing.T) {
		load := testutil.Pod("load", testutil.Node("a"), testutil.Phase(corev1.PodRunning), testutil.Container("c"),
			testutil.Requests("c", "cpu", "24", "memory", "64Gi"))
		useCluster(t, liveNode(t, "a", false), liveNode(t, "b", false), liveNode(t, "plain", true), load)
		w := writeTemp(t, onePod+`---
apiVersion: v1
kind: Pod
metadata: {name: cpu}
spec:
  containers:
  - name: c
    resources: {requests: {cpu: "2", memory: 4Gi}}
`)
		rep := whatIfJSON(t, "--kubeconfig", "x", "--workload", w, "--policy", "all")
		for _, p := range pairs {
			if o := rep.outcome(t, p, 0); o.Node != "b" || len(o.Tied) != 0 || o.Scheduler != contract.DefaultSchedulerName {
				t.Errorf("%s: pod one on %s (tied %v, scheduler %s); want b alone, by vgpu-scheduler: a is loaded", p, o.Node, o.Tied, o.Scheduler)
			}
			// b holds pod one, which counts 100m and 200 MiB for
			// kube-scheduler's scores: too little to tell b from the
			// empty plain in LeastAllocated's whole points.
			if o := rep.outcome(t, p, 1); !slices.Equal(o.Tied, []string{"b", "plain"}) || o.Scheduler != corev1.DefaultSchedulerName || len(o.GPUs) != 0 {
				t.Errorf("%s: CPU-only pod on %s (tied %v) by %s; want a tie of b and plain (a is loaded), by default-scheduler", p, o.Node, o.Tied, o.Scheduler)
			}
		}
		if rep.ScoreProfile.Source != ProfileShipped || !strings.Contains(rep.ScoreProfile.Fallback, "no Deployment labelled "+SchedulerSelector) {
			t.Errorf("without a vgpu-scheduler Deployment the profile must be the shipped one, saying why: %+v", rep.ScoreProfile)
		}
	})
}

// schedulerDeployment is the vgpu scheduler as kustomize/base/scheduler
// deploys it: kube-scheduler reading --config from a ConfigMap volume
// whose name carries kustomize's content hash.
func schedulerDeployment(config string) []runtime.Object {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "vgpu-scheduler", Namespace: "vgpu-system",
		Labels: map[string]string{"app.kubernetes.io/name": "vgpu-scheduler"}}}
	d.Spec.Template.Spec = corev1.PodSpec{
		Containers: []corev1.Container{
			{Name: "kube-scheduler", Command: []string{"kube-scheduler", "--config=/etc/vgpu/scheduler/kube-scheduler-config.yaml", "--v=2"},
				VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/vgpu/scheduler"}}},
			{Name: "extender", Args: []string{"--listen=127.0.0.1:8888"}},
		},
		Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "vgpu-scheduler-config-7h2k9"}}}}},
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "vgpu-scheduler-config-7h2k9", Namespace: "vgpu-system"},
		Data: map[string]string{"kube-scheduler-config.yaml": config}}
	return []runtime.Object{d, cm}
}

// TestWhatIfDeployedProfile: the what-if reads the profile from the
// ConfigMap the scheduler's Deployment mounts. One that turns off
// kube-scheduler's CPU and memory scores makes the loaded node a tie again;
// one the model cannot follow falls back to the shipped profile and says
// why.
func TestWhatIfDeployedProfile(t *testing.T) {
	load := testutil.Pod("load", testutil.Node("a"), testutil.Phase(corev1.PodRunning), testutil.Container("c"),
		testutil.Requests("c", "cpu", "24", "memory", "64Gi"))
	workload := writeTemp(t, onePod)
	const noCPU = `apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: vgpu-scheduler
  plugins:
    score:
      disabled: [{name: NodeResourcesFit}, {name: NodeResourcesBalancedAllocation}]
extenders:
- urlPrefix: http://127.0.0.1:8888
  filterVerb: filter
  prioritizeVerb: prioritize
  weight: 4
  managedResources:
  - {name: nvidia.com/gpumem, ignoredByScheduler: true}
`
	useCluster(t, append(schedulerDeployment(noCPU), liveNode(t, "a", false), liveNode(t, "b", false), load)...)
	rep := whatIfJSON(t, "--kubeconfig", "x", "--workload", workload)
	sp := rep.ScoreProfile
	if sp.Source != ProfileDeployed || sp.ConfigMap != "vgpu-system/vgpu-scheduler-config-7h2k9" || sp.ExtenderWeight != 4 || sp.Weights[kubescore.NodeResourcesFit] != 0 {
		t.Fatalf("profile: %+v; want the deployed ConfigMap's, extender weight 4, NodeResourcesFit off", sp)
	}
	if o := rep.outcome(t, "binpack/spread", 0); !slices.Equal(o.Tied, []string{"a", "b"}) {
		t.Errorf("without CPU/memory scores pod one must tie between a and b, got %s tied %v", o.Node, o.Tied)
	}
	out := runCommand(t, "--kubeconfig", "x", "--workload", workload)
	if !strings.Contains(out, "the deployed configuration, ConfigMap vgpu-system/vgpu-scheduler-config-7h2k9") || !strings.Contains(out, "extender at weight 4") {
		t.Errorf("the table must say which profile it used:\n%s", out)
	}

	bad := strings.Replace(noCPU, "  plugins:", "  pluginConfig:\n  - name: NodeResourcesFit\n    args: {scoringStrategy: {type: MostAllocated}}\n  plugins:", 1)
	useCluster(t, append(schedulerDeployment(bad), liveNode(t, "a", false), liveNode(t, "b", false), load)...)
	rep = whatIfJSON(t, "--kubeconfig", "x", "--workload", workload)
	if sp := rep.ScoreProfile; sp.Source != ProfileShipped || !strings.Contains(sp.Fallback, "pluginConfig[NodeResourcesFit]") || sp.ExtenderWeight != 10 {
		t.Errorf("a configuration the model does not follow: want the shipped profile (weight 10) and the reason, got %+v", sp)
	}
}

// TestWhatIfUnmodelled: a pod with what the model of kube-scheduler does
// not cover (topology spread) is still placed, marked unsure, with a note
// naming what; a plain pod beside it is not marked.
func TestWhatIfUnmodelled(t *testing.T) {
	useCluster(t, liveNode(t, "a", false), liveNode(t, "b", false))
	workload := writeTemp(t, onePod+`---
apiVersion: v1
kind: Pod
metadata: {name: spread}
spec:
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}
  containers:
  - name: c
    resources: {limits: {nvidia.com/gpumem: "8000"}}
---
apiVersion: v1
kind: Pod
metadata: {name: gated}
spec:
  schedulingGates: [{name: wait}]
  containers:
  - name: c
    resources: {limits: {nvidia.com/gpumem: "8000"}}
---
apiVersion: v1
kind: Pod
metadata: {name: urgent}
spec:
  priorityClassName: high
  containers:
  - name: c
    resources: {limits: {nvidia.com/gpu: "3"}}
`)
	rep := whatIfJSON(t, "--kubeconfig", "x", "--workload", workload)
	if o := rep.outcome(t, "binpack/spread", 0); o.Unmodelled != "" {
		t.Errorf("pod one is within the model, got %q", o.Unmodelled)
	}
	// kube-scheduler may preempt lower-priority pods for a pending pod
	// with a priority class; the model does not.
	if o := rep.outcome(t, "binpack/spread", 2); !strings.Contains(o.Unmodelled, "schedulingGates") {
		t.Errorf("pod gated: unmodelled %q; want its scheduling gates named", o.Unmodelled)
	}
	if o := rep.outcome(t, "binpack/spread", 3); o.Pending == "" || !strings.Contains(o.Unmodelled, "preempt") {
		t.Errorf("pod urgent: pending %q, unmodelled %q; want it pending with a note on preemption", o.Pending, o.Unmodelled)
	}
	o := rep.outcome(t, "binpack/spread", 1)
	if o.Node == "" || !strings.Contains(o.Unmodelled, "topologySpreadConstraints") {
		t.Errorf("pod spread: node %q, unmodelled %q; want a node and a note on its topology spread", o.Node, o.Unmodelled)
	}
	out := runCommand(t, "--kubeconfig", "x", "--workload", workload)
	if !regexp.MustCompile(`(?m)^spread\s+\S+ \[\S+\].*\(unsure\)`).MatchString(out) || !strings.Contains(out, "spread (binpack/spread): may land elsewhere: ") {
		t.Errorf("the table must mark pod spread unsure and say why:\n%s", out)
	}
}

// TestWhatIfFlags: flags of the replay that the what-if has no use for
// are refused, naming the flag.
func TestWhatIfFlags(t *testing.T) {
	useCluster(t, liveNode(t, "a", false))
	cmd := NewCommand()
	cmd.SetArgs([]string{"placement", "--kubeconfig", "x", "--workload", writeTemp(t, onePod), "--cpu-weight", "2"})
	cmd.SetOut(&strings.Builder{})
	cmd.SetErr(&strings.Builder{})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--cpu-weight does not apply with --kubeconfig") {
		t.Errorf("--cpu-weight with --kubeconfig: %v", err)
	}
}

// TestWhatIfSampling: above 100 nodes kube-scheduler scores only a sample
// of the feasible nodes unless the configuration asks for all; the report
// says so, with the sample's size.
func TestWhatIfSampling(t *testing.T) {
	live := &Live{Cluster: &Cluster{Source: "live cluster"}}
	for i := 0; i < 500; i++ {
		live.Nodes = append(live.Nodes, &corev1.Node{})
	}
	w := &Workload{Source: "pods.yaml"}
	if r := newWhatIfReport(live, w, ScoreProfile{}); !strings.Contains(r.Sampling, "found 230 feasible nodes of the 500 (percentageOfNodesToScore 46 %)") {
		t.Errorf("500 nodes, adaptive percentage: %q", r.Sampling)
	}
	all := int32(100)
	if r := newWhatIfReport(live, w, ScoreProfile{PercentageOfNodesToScore: &all}); r.Sampling != "" {
		t.Errorf("percentageOfNodesToScore 100 scores every node, got %q", r.Sampling)
	}
	live.Nodes = live.Nodes[:100]
	if r := newWhatIfReport(live, w, ScoreProfile{}); r.Sampling != "" {
		t.Errorf("100 nodes are all scored, got %q", r.Sampling)
	}
}
