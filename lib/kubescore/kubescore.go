package kubescore

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
)

// MaxNodeScore is a score plugin's ceiling; MaxExtenderPriority the
// extender's. kube-scheduler multiplies an extender's priority by its
// weight and by MaxNodeScore / MaxExtenderPriority.
const (
	MaxNodeScore        = 100
	MaxExtenderPriority = 10
)

// The score plugins of kube-scheduler v1.37.2's default profile
// (pkg/scheduler/apis/config/v1/default_plugins.go), by name.
const (
	NodeResourcesFit                = "NodeResourcesFit"
	NodeResourcesBalancedAllocation = "NodeResourcesBalancedAllocation"
	TaintToleration                 = "TaintToleration"
	NodeAffinity                    = "NodeAffinity"
	PodTopologySpread               = "PodTopologySpread"
	InterPodAffinity                = "InterPodAffinity"
	ImageLocality                   = "ImageLocality"
	VolumeBinding                   = "VolumeBinding"
	DynamicResources                = "DynamicResources"
)

// DefaultWeights are the score plugins' weights in kube-scheduler
// v1.37.2's default profile: VolumeBinding scores since StorageCapacityScoring
// went beta (on) in 1.37 and DynamicResources with DRA (GA).
func DefaultWeights() map[string]int64 {
	return map[string]int64{
		TaintToleration:                 3,
		NodeAffinity:                    2,
		NodeResourcesFit:                1,
		VolumeBinding:                   1,
		PodTopologySpread:               2,
		InterPodAffinity:                2,
		DynamicResources:                2,
		NodeResourcesBalancedAllocation: 1,
		ImageLocality:                   1,
	}
}

// Profile is what of a kube-scheduler profile and its vgpu extender the
// model needs.
type Profile struct {
	// Weights of the enabled score plugins, by name; a plugin not in the
	// map is disabled.
	Weights map[string]int64
	// ExtenderWeight multiplies the extender's priorities.
	ExtenderWeight int64
	// Ignored are the extended resources the extender manages with
	// ignoredByScheduler: kube-scheduler's own filter does not count them.
	Ignored map[corev1.ResourceName]bool
}

// Cluster is kube-scheduler's snapshot: every node, and the pods bound to
// each that have not finished.
type Cluster struct {
	nodes  map[string]*node
	images map[string]imageState
	total  int
}

type node struct {
	obj *corev1.Node
	// requested is the pods' requests as written; nonZero counts 100m CPU
	// and 200 MiB for a container that names none.
	requested, nonZero resources
	pods               int
	affinityPods       bool
}

type imageState struct {
	size  int64
	nodes int
}

// NewCluster builds the snapshot. Pods not bound to one of nodes, and pods
// that succeeded or failed, are left out, as kube-scheduler's cache does.
func NewCluster(nodes []*corev1.Node, pods []*corev1.Pod) *Cluster {
	c := &Cluster{nodes: make(map[string]*node, len(nodes)), images: map[string]imageState{}, total: len(nodes)}
	for _, n := range nodes {
		c.nodes[n.Name] = &node{obj: n, requested: resources{}, nonZero: resources{}}
		seen := map[string]bool{}
		for _, img := range n.Status.Images {
			for _, name := range img.Names {
				if seen[name] {
					continue
				}
				seen[name] = true
				s := c.images[name]
				s.size, s.nodes = img.SizeBytes, s.nodes+1
				c.images[name] = s
			}
		}
	}
	for _, p := range pods {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			c.Add(p, p.Spec.NodeName)
		}
	}
	return c
}

// Add counts pod on the node called name, as kube-scheduler's cache
// assumes a pod on the node it chose before the binding lands, so that a
// caller placing pods one after another sees each on its node. A node not
// in the snapshot is ignored.
func (c *Cluster) Add(pod *corev1.Pod, name string) {
	n := c.nodes[name]
	if n == nil {
		return
	}
	n.requested.add(podRequests(pod, false))
	n.nonZero.add(podRequests(pod, true))
	n.pods++
	if a := pod.Spec.Affinity; a != nil && (a.PodAffinity != nil || a.PodAntiAffinity != nil) {
		n.affinityPods = true
	}
}

// Unmodelled says why the model cannot stand for kube-scheduler with
// profile p for this pod on this cluster: a plugin p enables that would
// score the nodes differently, or a filter the model does not run. nil
// means the model's choice is kube-scheduler's.
func (c *Cluster) Unmodelled(p Profile, pod *corev1.Pod) error {
	var errs []error
	on := func(plugin string) bool { return p.Weights[plugin] > 0 }
	known := DefaultWeights()
	for name, w := range p.Weights {
		if _, ok := known[name]; !ok && w > 0 {
			errs = append(errs, fmt.Errorf("score plugin %s is not one of kube-scheduler's defaults", name))
		}
	}
	a := pod.Spec.Affinity
	if on(NodeAffinity) && a != nil && a.NodeAffinity != nil && len(a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution) > 0 {
		errs = append(errs, errors.New("spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution: NodeAffinity's score"))
	}
	if len(pod.Spec.NodeSelector) > 0 || (a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil) {
		errs = append(errs, errors.New("spec.nodeSelector or required node affinity: NodeAffinity's filter"))
	}
	if len(pod.Spec.TopologySpreadConstraints) > 0 {
		errs = append(errs, errors.New("spec.topologySpreadConstraints: PodTopologySpread"))
	} else if on(PodTopologySpread) && (len(pod.Labels) > 0 || controlled(pod)) {
		errs = append(errs, errors.New("metadata.labels or a controller: PodTopologySpread's system default constraints may apply"))
	}
	if a != nil && (a.PodAffinity != nil || a.PodAntiAffinity != nil) {
		errs = append(errs, errors.New("spec.affinity.podAffinity/podAntiAffinity: InterPodAffinity"))
	}
	if on(InterPodAffinity) {
		for name, n := range c.nodes {
			if n.affinityPods {
				errs = append(errs, fmt.Errorf("node %s runs a pod with pod (anti-)affinity: InterPodAffinity", name))
				break
			}
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil || v.Ephemeral != nil {
			errs = append(errs, fmt.Errorf("volume %s claims a persistent volume: VolumeBinding", v.Name))
		}
	}
	for _, ctr := range portHolders(pod) {
		for _, port := range ctr.Ports {
			host := port.HostPort
			if host == 0 && pod.Spec.HostNetwork {
				// The API server defaults it to the container port.
				host = port.ContainerPort
			}
			if host != 0 {
				errs = append(errs, fmt.Errorf("container %s asks for host port %d: NodePorts' filter", ctr.Name, host))
			}
		}
	}
	if pod.Spec.NodeName != "" {
		errs = append(errs, fmt.Errorf("spec.nodeName %s: kube-scheduler never places the pod, the kubelet of that node runs it", pod.Spec.NodeName))
	}
	if pod.Spec.RuntimeClassName != nil && pod.Spec.Overhead == nil {
		errs = append(errs, fmt.Errorf("spec.runtimeClassName %s: its RuntimeClass may add overhead, a node selector and tolerations when the pod is admitted", *pod.Spec.RuntimeClassName))
	}
	if len(pod.Spec.ResourceClaims) > 0 {
		errs = append(errs, errors.New("spec.resourceClaims: DynamicResources"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pod %s/%s: the model of kube-scheduler does not cover %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// portHolders are the containers whose host ports NodePorts checks: the
// app containers and the restartable init containers (sidecars), which run
// as long as the pod.
func portHolders(pod *corev1.Pod) []corev1.Container {
	out := slices.Clone(pod.Spec.Containers)
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			out = append(out, c)
		}
	}
	return out
}

func controlled(pod *corev1.Pod) bool {
	for _, o := range pod.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}

// Fits says why kube-scheduler's own filters, as far as the model runs
// them, reject the node for the pod; "" when they pass it.
func (c *Cluster) Fits(p Profile, pod *corev1.Pod, name string) string {
	n := c.nodes[name]
	if n == nil {
		return "node not in the snapshot"
	}
	if n.obj.Spec.Unschedulable && !tolerates(pod, &corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}) {
		return "node is unschedulable"
	}
	for i := range n.obj.Spec.Taints {
		t := &n.obj.Spec.Taints[i]
		if (t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute) && !tolerates(pod, t) {
			return fmt.Sprintf("untolerated taint %s:%s", t.Key, t.Effect)
		}
	}
	alloc := allocatable(n.obj)
	// A node that lists no pod count takes no pod (GetAllowedPodNumber 0).
	if int64(n.pods)+1 > alloc[corev1.ResourcePods] {
		return "too many pods"
	}
	for r, want := range podRequests(pod, false) {
		if want == 0 || r == corev1.ResourcePods || p.Ignored[r] {
			continue
		}
		if want > alloc[r]-n.requested[r] {
			return "insufficient " + string(r)
		}
	}
	return ""
}

// Scores returns, aligned with feasible (the nodes that passed every
// filter, the extender's included), the sum over the modelled score
// plugins of each plugin's normalised score times its weight.
func (c *Cluster) Scores(p Profile, pod *corev1.Pod, feasible []string) ([]int64, error) {
	nodes := make([]*node, len(feasible))
	for i, name := range feasible {
		if nodes[i] = c.nodes[name]; nodes[i] == nil {
			return nil, fmt.Errorf("node %s is not in the snapshot", name)
		}
	}
	total := make([]int64, len(nodes))
	add := func(plugin string, scores []int64) {
		w := p.Weights[plugin]
		for i, s := range scores {
			total[i] += w * s
		}
	}
	req, nonZero := podRequests(pod, false), podRequests(pod, true)
	scores := make([]int64, len(nodes))
	if p.Weights[NodeResourcesFit] > 0 {
		for i, n := range nodes {
			scores[i] = leastAllocated(nonZero, n.nonZero, allocatable(n.obj))
		}
		add(NodeResourcesFit, scores)
	}
	if p.Weights[NodeResourcesBalancedAllocation] > 0 && (req[corev1.ResourceCPU] != 0 || req[corev1.ResourceMemory] != 0) {
		for i, n := range nodes {
			scores[i] = balanced(req, n.requested, allocatable(n.obj))
		}
		add(NodeResourcesBalancedAllocation, scores)
	}
	if p.Weights[TaintToleration] > 0 {
		for i, n := range nodes {
			scores[i] = 0
			for j := range n.obj.Spec.Taints {
				if t := &n.obj.Spec.Taints[j]; t.Effect == corev1.TaintEffectPreferNoSchedule && !tolerates(pod, t) {
					scores[i]++
				}
			}
		}
		normalize(scores, true)
		add(TaintToleration, scores)
	}
	if p.Weights[ImageLocality] > 0 {
		for i, n := range nodes {
			scores[i] = c.imageLocality(pod, n.obj)
		}
		add(ImageLocality, scores)
	}
	return total, nil
}

// Best returns the indexes of the nodes kube-scheduler may choose, given
// the plugins' weighted total for each feasible node (Scores) and the
// extender's priorities (0..MaxExtenderPriority; 0 for a node its answer
// leaves out). It picks the highest total, ties broken by a random number
// that it draws only for the nodes the extender's answer lists, so a node
// left out loses a tie to one listed; a lone feasible node is not scored.
func Best(p Profile, plugins, priorities []int64) (best []int, totals []int64) {
	totals = make([]int64, len(plugins))
	for i := range plugins {
		totals[i] = plugins[i] + priorities[i]*p.ExtenderWeight*(MaxNodeScore/MaxExtenderPriority)
	}
	if len(totals) == 1 {
		return []int{0}, totals
	}
	listed := false
	for i, t := range totals {
		switch {
		case len(best) == 0 || t > totals[best[0]]:
			best, listed = []int{i}, priorities[i] > 0
		case t == totals[best[0]]:
			best, listed = append(best, i), listed || priorities[i] > 0
		}
	}
	if listed {
		best = slices.DeleteFunc(best, func(i int) bool { return priorities[i] == 0 })
	}
	return best, totals
}

// leastAllocated is NodeResourcesFit's LeastAllocated score over CPU and
// memory, weights 1 and 1: per resource, the share left free after the
// pod, 0..100, in integer arithmetic; a resource the node has none of is
// left out.
func leastAllocated(pod, onNode, alloc resources) int64 {
	var sum, weights int64
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		capacity := alloc[r]
		if capacity == 0 {
			continue
		}
		requested := onNode[r] + pod[r]
		if requested <= capacity {
			sum += (capacity - requested) * MaxNodeScore / capacity
		}
		weights++
	}
	if weights == 0 {
		return 0
	}
	return sum / weights
}

// balanced is NodeResourcesBalancedAllocation's score in v1.37: half the
// scale plus half of how much the pod changes the node's balance (1 minus
// the standard deviation of CPU and memory fractions, on requests as
// written), so that a pod that evens a node out scores above 50.
func balanced(pod, onNode, alloc resources) int64 {
	with, without := resources{}, resources{}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		with[r], without[r] = onNode[r]+pod[r], onNode[r]
	}
	return MaxNodeScore/2 + (MaxNodeScore/2+balance(with, alloc)-balance(without, alloc))/2
}

func balance(requested, alloc resources) int64 {
	var fractions []float64
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if alloc[r] == 0 {
			continue
		}
		fractions = append(fractions, min(1, float64(requested[r])/float64(alloc[r])))
	}
	std := 0.0
	if len(fractions) == 2 {
		std = math.Abs((fractions[0] - fractions[1]) / 2)
	}
	return int64((1 - std) * MaxNodeScore)
}

// normalize is kube-scheduler's DefaultNormalizeScore: scale so that the
// highest becomes 100 (reverse: 100 minus that); all zero stays 0, or 100
// each when reversed.
func normalize(scores []int64, reverse bool) {
	var top int64
	for _, s := range scores {
		top = max(top, s)
	}
	for i, s := range scores {
		switch {
		case top == 0 && reverse:
			scores[i] = MaxNodeScore
		case top == 0:
		case reverse:
			scores[i] = MaxNodeScore - MaxNodeScore*s/top
		default:
			scores[i] = MaxNodeScore * s / top
		}
	}
}

// ImageLocality's bounds: an image counts from 23 MB, and up to 1000 MB
// per container.
const (
	mb                    = 1024 * 1024
	minImageThreshold     = 23 * mb
	maxContainerThreshold = 1000 * mb
)

// imageLocality is ImageLocality's score: the sizes of the pod's images
// the node holds, each scaled by the share of the cluster's nodes that
// hold it, clamped and mapped onto 0..100.
func (c *Cluster) imageLocality(pod *corev1.Pod, n *corev1.Node) int64 {
	on := map[string]bool{}
	for _, img := range n.Status.Images {
		for _, name := range img.Names {
			on[name] = true
		}
	}
	var sum int64
	count := 0
	score := func(image string) {
		count++
		if name := normalizedImage(image); on[name] {
			s := c.images[name]
			sum += int64(float64(s.size) * (float64(s.nodes) / float64(c.total)))
		}
	}
	for _, ctr := range pod.Spec.InitContainers {
		score(ctr.Image)
	}
	for _, ctr := range pod.Spec.Containers {
		score(ctr.Image)
	}
	for _, v := range pod.Spec.Volumes {
		if v.Image != nil {
			score(v.Image.Reference)
		}
	}
	hi := int64(maxContainerThreshold * count)
	if sum < minImageThreshold {
		sum = minImageThreshold
	} else if sum > hi {
		sum = hi
	}
	return MaxNodeScore * (sum - minImageThreshold) / (hi - minImageThreshold)
}

// normalizedImage adds the tag ":latest" to an image named without one,
// as kube-scheduler does before looking it up among a node's images.
func normalizedImage(name string) string {
	if strings.LastIndex(name, ":") <= strings.LastIndex(name, "/") {
		return name + ":latest"
	}
	return name
}

func tolerates(pod *corev1.Pod, t *corev1.Taint) bool {
	for i := range pod.Spec.Tolerations {
		// Comparison operators (Gt, Lt) are alpha and off in v1.37.
		if pod.Spec.Tolerations[i].ToleratesTaint(logr.Discard(), t, false) {
			return true
		}
	}
	return false
}
