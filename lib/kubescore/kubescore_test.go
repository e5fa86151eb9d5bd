package kubescore

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testNode(name, cpu, mem string, taints ...corev1.Taint) *corev1.Node {
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(cpu),
		corev1.ResourceMemory: resource.MustParse(mem),
		corev1.ResourcePods:   resource.MustParse("110"),
		"nvidia.com/gpu":      resource.MustParse("8"),
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: taints},
		Status: corev1.NodeStatus{Allocatable: res}}
}

// testPod has one container per request list (nil: no requests at all).
func testPod(name, node string, requests ...corev1.ResourceList) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: corev1.PodSpec{NodeName: node}}
	for i, r := range requests {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: string(rune('a' + i)), Image: "app:1",
			Resources: corev1.ResourceRequirements{Requests: r}})
	}
	return p
}

func req(kv ...string) corev1.ResourceList {
	r := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		r[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return r
}

func prefer(key string) corev1.Taint {
	return corev1.Taint{Key: key, Effect: corev1.TaintEffectPreferNoSchedule}
}

func only(weights ...any) Profile {
	p := Profile{Weights: map[string]int64{}, ExtenderWeight: 10}
	for i := 0; i < len(weights); i += 2 {
		p.Weights[weights[i].(string)] = int64(weights[i+1].(int))
	}
	return p
}

// TestScores checks each modelled plugin against values worked out by hand
// from kube-scheduler v1.37.2's formulas (the arithmetic is in the
// comments).
func TestScores(t *testing.T) {
	defaults := Profile{Weights: DefaultWeights(), ExtenderWeight: 10}
	busy := testPod("busy", "n1", req("cpu", "1", "memory", "2Gi"))
	for _, tc := range []struct {
		name    string
		profile Profile
		nodes   []*corev1.Node
		pods    []*corev1.Pod
		pod     *corev1.Pod
		want    []int64
	}{{
		// A pod without requests counts 100m and 200Mi. n1 holds 1 CPU and
		// 2Gi: cpu (4000-1100)*100/4000 = 72, memory (8Gi-2Gi-200Mi)*100/8Gi
		// = 72.56 -> 72, mean 72. n2 is empty: 3900*100/4000 = 97,
		// (8Gi-200Mi)*100/8Gi = 97.56 -> 97, mean 97. BalancedAllocation
		// skips a pod that requests nothing.
		name: "LeastAllocated on the default requests", profile: only(NodeResourcesFit, 1, NodeResourcesBalancedAllocation, 1),
		nodes: []*corev1.Node{testNode("n1", "4", "8Gi"), testNode("n2", "4", "8Gi")}, pods: []*corev1.Pod{busy},
		pod: testPod("p", "", nil), want: []int64{72, 97},
	}, {
		// The default profile adds TaintToleration 3 x 100 (no taint
		// anywhere: 100 on every node) and ImageLocality 0 (no images).
		name: "default profile", profile: defaults,
		nodes: []*corev1.Node{testNode("n1", "4", "8Gi"), testNode("n2", "4", "8Gi")}, pods: []*corev1.Pod{busy},
		pod: testPod("p", "", nil), want: []int64{372, 397},
	}, {
		// Pod 1 CPU, 3Gi. n1 holds 2 CPU, 1Gi. Fit: n1 cpu 1000*100/4000 =
		// 25, memory 4Gi*100/8Gi = 50, mean 37; n2 75 and 62.5 -> 62, mean
		// 68. Balanced: n1 without the pod |0.5-0.125|/2 = 0.1875 -> 81,
		// with it |0.75-0.5|/2 = 0.125 -> 87, 50+(50+87-81)/2 = 78; n2
		// without 100, with |0.25-0.375|/2 -> 93, 50+(50+93-100)/2 = 71.
		name: "BalancedAllocation rewards the pod that evens a node out", profile: only(NodeResourcesFit, 1, NodeResourcesBalancedAllocation, 1),
		nodes: []*corev1.Node{testNode("n1", "4", "8Gi"), testNode("n2", "4", "8Gi")},
		pods:  []*corev1.Pod{testPod("held", "n1", req("cpu", "2", "memory", "1Gi"))},
		pod:   testPod("p", "", req("cpu", "1", "memory", "3Gi")), want: []int64{37 + 78, 68 + 71},
	}, {
		// A container that names memory but no CPU counts 100m of CPU in
		// Fit, nothing in Balanced. Pod: 2Gi. n1 empty 8 CPU 8Gi: Fit cpu
		// 7900*100/8000 = 98, memory 75, mean 86; Balanced without 100,
		// with |0-0.25|/2 -> 87, 50+(50+87-100)/2 = 68.
		name: "a missing CPU request counts 100m in Fit only", profile: only(NodeResourcesFit, 1, NodeResourcesBalancedAllocation, 1),
		nodes: []*corev1.Node{testNode("n1", "8", "8Gi")},
		pod:   testPod("p", "", req("memory", "2Gi")), want: []int64{86 + 68},
	}, {
		// Intolerable PreferNoSchedule taints 2, 1, 0, normalised in
		// reverse: 100-100*2/2 = 0, 100-100*1/2 = 50, 100; times 3.
		name: "TaintToleration", profile: only(TaintToleration, 3),
		nodes: []*corev1.Node{testNode("n1", "4", "8Gi", prefer("a"), prefer("b")), testNode("n2", "4", "8Gi", prefer("a")), testNode("n3", "4", "8Gi")},
		pod:   testPod("p", "", nil), want: []int64{0, 150, 300},
	}, {
		// Tolerating b leaves one intolerable taint (a) on n1 and n2, none
		// on n3: 0, 0, 100.
		name: "TaintToleration with a toleration", profile: only(TaintToleration, 1),
		nodes: []*corev1.Node{testNode("n1", "4", "8Gi", prefer("a"), prefer("b")), testNode("n2", "4", "8Gi", prefer("a")), testNode("n3", "4", "8Gi", prefer("b"))},
		pod: func() *corev1.Pod {
			p := testPod("p", "", nil)
			p.Spec.Tolerations = []corev1.Toleration{{Key: "b", Operator: corev1.TolerationOpExists}}
			return p
		}(), want: []int64{0, 0, 100},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCluster(tc.nodes, tc.pods)
			var names []string
			for _, n := range tc.nodes {
				names = append(names, n.Name)
			}
			got, err := c.Scores(tc.profile, tc.pod, names)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("scores %v, want %v", got, tc.want)
			}
		})
	}
}

// TestImageLocality: a 500 MiB image on 2 of 4 nodes counts 250 MiB;
// 100*(250-23)/(1000-23) = 23. An image named without a tag is looked up
// as :latest.
func TestImageLocality(t *testing.T) {
	img := corev1.ContainerImage{Names: []string{"repo/cuda:latest", "repo/cuda@sha256:00"}, SizeBytes: 500 * mb}
	nodes := []*corev1.Node{testNode("n1", "4", "8Gi"), testNode("n2", "4", "8Gi"), testNode("n3", "4", "8Gi"), testNode("n4", "4", "8Gi")}
	nodes[0].Status.Images = []corev1.ContainerImage{img}
	nodes[1].Status.Images = []corev1.ContainerImage{img}
	c := NewCluster(nodes, nil)
	pod := testPod("p", "", nil)
	pod.Spec.Containers[0].Image = "repo/cuda"
	got, err := c.Scores(only(ImageLocality, 1), pod, []string{"n1", "n3"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{23, 0}; !slices.Equal(got, want) {
		t.Errorf("scores %v, want %v", got, want)
	}
}

// TestBest: the extender's priority counts weight x 10 points per step;
// ties go to nodes the extender's answer lists.
func TestBest(t *testing.T) {
	p := only()
	for _, tc := range []struct {
		name                string
		plugins, priorities []int64
		want                []int
	}{
		{"the plugins break the extender's tie", []int64{372, 397}, []int64{10, 10}, []int{1}},
		{"one extender step (100) outweighs 25 points", []int64{372, 397}, []int64{10, 9}, []int{0}},
		{"the plugins outweigh one step by more than 100", []int64{100, 201}, []int64{10, 9}, []int{1}},
		{"equal totals: both", []int64{100, 200}, []int64{10, 9}, []int{0, 1}},
		{"a node left out of the answer loses a tie", []int64{400, 300}, []int64{0, 1}, []int{1}},
		{"all left out: any", []int64{300, 300, 200}, []int64{0, 0, 0}, []int{0, 1}},
		{"one feasible node is not scored", []int64{0}, []int64{0}, []int{0}},
	} {
		if got, totals := Best(p, tc.plugins, tc.priorities); !slices.Equal(got, tc.want) {
			t.Errorf("%s: Best = %v (totals %v), want %v", tc.name, got, totals, tc.want)
		}
	}
}

func TestFits(t *testing.T) {
	p := Profile{Weights: DefaultWeights(), Ignored: map[corev1.ResourceName]bool{"nvidia.com/gpumem": true}}
	full := testNode("full", "4", "8Gi")
	full.Status.Allocatable[corev1.ResourcePods] = resource.MustParse("1")
	cordoned := testNode("cordoned", "4", "8Gi")
	cordoned.Spec.Unschedulable = true
	podless := testNode("podless", "4", "8Gi")
	delete(podless.Status.Allocatable, corev1.ResourcePods)
	nodes := []*corev1.Node{testNode("n1", "4", "8Gi"), full, cordoned, podless,
		testNode("tainted", "4", "8Gi", corev1.Taint{Key: "gpu", Effect: corev1.TaintEffectNoSchedule})}
	c := NewCluster(nodes, []*corev1.Pod{
		testPod("a", "n1", req("cpu", "3", "nvidia.com/gpu", "6")), testPod("b", "full", nil),
		func() *corev1.Pod {
			p := testPod("done", "n1", req("cpu", "4"))
			p.Status.Phase = corev1.PodSucceeded
			return p
		}(),
	})
	for _, tc := range []struct {
		pod  *corev1.Pod
		node string
		want string
	}{
		{testPod("p", "", req("cpu", "1", "nvidia.com/gpu", "2", "nvidia.com/gpumem", "99999")), "n1", ""},
		{testPod("p", "", req("cpu", "1100m")), "n1", "insufficient cpu"},
		{testPod("p", "", req("nvidia.com/gpu", "3")), "n1", "insufficient nvidia.com/gpu"},
		{testPod("p", "", nil), "full", "too many pods"},
		{testPod("p", "", nil), "cordoned", "node is unschedulable"},
		{testPod("p", "", nil), "tainted", "untolerated taint gpu:NoSchedule"},
		// kube-scheduler allows no pod on a node whose allocatable lists no
		// pod count (GetAllowedPodNumber is 0).
		{testPod("p", "", nil), "podless", "too many pods"},
	} {
		if got := c.Fits(p, tc.pod, tc.node); got != tc.want {
			t.Errorf("pod %v on %s: %q, want %q", tc.pod.Spec.Containers[0].Resources.Requests, tc.node, got, tc.want)
		}
	}
}

// TestAdd: a pod placed with Add counts on its node for the filters and
// the scores of the pods after it, as kube-scheduler's assumed pods do.
func TestAdd(t *testing.T) {
	p := Profile{Weights: map[string]int64{NodeResourcesFit: 1}, ExtenderWeight: 10}
	c := NewCluster([]*corev1.Node{testNode("n1", "4", "8Gi"), testNode("n2", "4", "8Gi")}, nil)
	pod := testPod("p", "", req("cpu", "3", "memory", "4Gi"))
	before, err := c.Scores(p, pod, []string{"n1", "n2"})
	if err != nil {
		t.Fatal(err)
	}
	if before[0] != before[1] {
		t.Fatalf("empty twin nodes score %v, want equal", before)
	}
	c.Add(testPod("first", "", req("cpu", "3", "memory", "4Gi")), "n1")
	if got := c.Fits(p, pod, "n1"); got != "insufficient cpu" {
		t.Errorf("a second 3-CPU pod on n1 after Add: %q, want insufficient cpu", got)
	}
	if got := c.Fits(p, pod, "n2"); got != "" {
		t.Errorf("n2 untouched by Add: %q, want it to fit", got)
	}
	small := testPod("s", "", req("cpu", "500m"))
	after, err := c.Scores(p, small, []string{"n1", "n2"})
	if err != nil {
		t.Fatal(err)
	}
	if after[0] >= after[1] {
		t.Errorf("LeastAllocated after Add: n1 %d, n2 %d; want n1 below n2", after[0], after[1])
	}
	c.Add(pod, "gone") // not in the snapshot: ignored
}

// TestPodRequests: a sidecar runs beside the init container after it and
// beside the app; overhead adds; the scoring view counts 100m and 200 MiB
// for each container that names neither.
func TestPodRequests(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	p := testPod("p", "", req("cpu", "1"))
	p.Spec.InitContainers = []corev1.Container{
		{Name: "side", RestartPolicy: &always, Resources: corev1.ResourceRequirements{Requests: req("cpu", "500m")}},
		{Name: "init", Resources: corev1.ResourceRequirements{Requests: req("cpu", "2")}},
	}
	p.Spec.Overhead = req("cpu", "250m")
	// Init phase 2 + 0.5, steady 1 + 0.5: 2.5 CPU, plus 0.25.
	if got := podRequests(p, false); got[corev1.ResourceCPU] != 2750 || got[corev1.ResourceMemory] != 0 {
		t.Errorf("requests %v, want cpu 2750 and no memory", got)
	}
	// Memory named nowhere: steady app + sidecar 400 MiB, init + sidecar
	// 400 MiB.
	if got := podRequests(p, true); got[corev1.ResourceCPU] != 2750 || got[corev1.ResourceMemory] != 400*mb {
		t.Errorf("non-zero requests %v, want cpu 2750, memory %d", got, 400*mb)
	}
}

// TestPodLevelRequests: pod-level requests (PodLevelResources, on by
// default) replace the containers' sum for CPU and memory; the scoring view
// adds the 100m/200 MiB defaults only for what neither level names.
func TestPodLevelRequests(t *testing.T) {
	p := testPod("p", "", req("cpu", "1"), nil)
	p.Spec.Resources = &corev1.ResourceRequirements{Requests: req("cpu", "3")}
	if got := podRequests(p, false); got[corev1.ResourceCPU] != 3000 || got[corev1.ResourceMemory] != 0 {
		t.Errorf("requests %v, want cpu 3000 and no memory", got)
	}
	if got := podRequests(p, true); got[corev1.ResourceCPU] != 3000 || got[corev1.ResourceMemory] != 400*mb {
		t.Errorf("non-zero requests %v, want cpu 3000, memory %d", got, 400*mb)
	}
	c := NewCluster([]*corev1.Node{testNode("n1", "4", "8Gi")}, []*corev1.Pod{func() *corev1.Pod { q := p.DeepCopy(); q.Spec.NodeName = "n1"; return q }()})
	if got := c.Fits(Profile{Weights: DefaultWeights()}, testPod("q", "", req("cpu", "1500m")), "n1"); got != "insufficient cpu" {
		t.Errorf("1.5 CPU beside a pod with 3 CPU at pod level: %q, want insufficient cpu", got)
	}
	if err := c.Unmodelled(Profile{Weights: DefaultWeights()}, p); err != nil {
		t.Errorf("a pod with pod-level requests: %v", err)
	}
}

// TestResizedPodCounts: for a pod mid-resize kube-scheduler counts the
// larger of the spec and the kubelet's allocation; after an infeasible
// resize, the allocation alone.
func TestResizedPodCounts(t *testing.T) {
	grown := testPod("r", "n1", req("cpu", "1"))
	grown.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "a", AllocatedResources: req("cpu", "2")}}
	if got := podRequests(grown, false)[corev1.ResourceCPU]; got != 2000 {
		t.Errorf("spec 1 CPU, allocated 2: counts %dm, want 2000m", got)
	}
	stuck := testPod("r", "n1", req("cpu", "3"))
	stuck.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "a", AllocatedResources: req("cpu", "1")}}
	stuck.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodResizePending, Status: corev1.ConditionTrue, Reason: corev1.PodReasonInfeasible}}
	if got := podRequests(stuck, false)[corev1.ResourceCPU]; got != 1000 {
		t.Errorf("infeasible resize to 3 CPU from 1: counts %dm, want 1000m", got)
	}
	c := NewCluster([]*corev1.Node{testNode("n1", "4", "8Gi")}, []*corev1.Pod{grown})
	if got := c.Fits(Profile{Weights: DefaultWeights()}, testPod("q", "", req("cpu", "2500m")), "n1"); got != "insufficient cpu" {
		t.Errorf("2.5 CPU beside a pod allocated 2: %q, want insufficient cpu", got)
	}
}

func TestUnmodelled(t *testing.T) {
	nodes := []*corev1.Node{testNode("n1", "4", "8Gi")}
	plain := NewCluster(nodes, nil)
	def := Profile{Weights: DefaultWeights()}
	if err := plain.Unmodelled(def, testPod("p", "", nil)); err != nil {
		t.Errorf("a bare pod: %v", err)
	}
	labelled := testPod("p", "", nil)
	labelled.Labels = map[string]string{"app": "x"}
	if err := plain.Unmodelled(def, labelled); err == nil || !strings.Contains(err.Error(), "PodTopologySpread") {
		t.Errorf("a labelled pod under the default profile: %v, want PodTopologySpread named", err)
	}
	if err := plain.Unmodelled(only(NodeResourcesFit, 1), labelled); err != nil {
		t.Errorf("a labelled pod without PodTopologySpread: %v", err)
	}
	claim := testPod("p", "", nil)
	claim.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}}}
	if err := plain.Unmodelled(def, claim); err == nil || !strings.Contains(err.Error(), "VolumeBinding") {
		t.Errorf("a pod with a claim: %v, want VolumeBinding named", err)
	}
	ported := testPod("p", "", nil)
	ported.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}
	if err := plain.Unmodelled(def, ported); err == nil || !strings.Contains(err.Error(), "NodePorts") {
		t.Errorf("a pod with a host port: %v, want NodePorts named", err)
	}
	always := corev1.ContainerRestartPolicyAlways
	sidecarPort := testPod("p", "", nil)
	sidecarPort.Spec.InitContainers = []corev1.Container{{Name: "side", RestartPolicy: &always, Ports: []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}}}
	if err := plain.Unmodelled(def, sidecarPort); err == nil || !strings.Contains(err.Error(), "NodePorts") {
		t.Errorf("a sidecar with a host port: %v, want NodePorts named", err)
	}
	// The API server defaults hostPort to containerPort on the host network.
	hostNet := testPod("p", "", nil)
	hostNet.Spec.HostNetwork = true
	hostNet.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80}}
	if err := plain.Unmodelled(def, hostNet); err == nil || !strings.Contains(err.Error(), "NodePorts") {
		t.Errorf("a host-network pod with a port: %v, want NodePorts named", err)
	}
	// kube-scheduler never places a pod that names its node.
	named := testPod("p", "n1", nil)
	if err := plain.Unmodelled(def, named); err == nil || !strings.Contains(err.Error(), "spec.nodeName") {
		t.Errorf("a pod naming its node: %v, want spec.nodeName named", err)
	}
	// RuntimeClass admission may add overhead, a node selector and
	// tolerations to a pod not yet admitted.
	runtime := testPod("p", "", nil)
	kata := "kata"
	runtime.Spec.RuntimeClassName = &kata
	if err := plain.Unmodelled(def, runtime); err == nil || !strings.Contains(err.Error(), "runtimeClassName") {
		t.Errorf("a pod with a runtime class and no overhead: %v, want runtimeClassName named", err)
	}
	affine := testPod("a", "n1", nil)
	affine.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{}}
	if err := NewCluster(nodes, []*corev1.Pod{affine}).Unmodelled(def, testPod("p", "", nil)); err == nil || !strings.Contains(err.Error(), "InterPodAffinity") {
		t.Errorf("a node running a pod with anti-affinity: %v, want InterPodAffinity named", err)
	}
	if err := plain.Unmodelled(Profile{Weights: map[string]int64{"MyPlugin": 1}}, testPod("p", "", nil)); err == nil || !strings.Contains(err.Error(), "MyPlugin") {
		t.Errorf("an unknown score plugin: %v", err)
	}
}
