package simulate

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/kubescore"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// Outcome is where one new pod would land under one policy.
type Outcome struct {
	Pod string `json:"pod"`
	// Scheduler is the scheduler the pod goes to once admitted: vgpu's
	// for a pod that asks for a vgpu resource (the webhook routes it),
	// else the pod's own.
	Scheduler string `json:"scheduler"`
	// Node is "" when the pod stays pending.
	Node string   `json:"node,omitempty"`
	GPUs []string `json:"gpus,omitempty"`
	// Tied lists, when kube-scheduler would pick at random among several
	// equally good nodes, all of them, Node among them; the pods after
	// this one assume Node.
	Tied []string `json:"tiedNodes,omitempty"`
	// Pending says why no node takes the pod: the reasons, with how many
	// nodes gave each.
	Pending string `json:"pending,omitempty"`
	// Unmodelled says what of the pod or the cluster the model of
	// kube-scheduler does not cover: its answer for this pod may be
	// wrong.
	Unmodelled string `json:"unmodelled,omitempty"`
}

// WhatIf places the workload's pods, in order, on the live cluster as
// kube-scheduler with sp's profile and vgpu's extender would under o's
// policies (docs/placement.md, "What-if on a live cluster"): for each pod,
// kube-scheduler's own filters (lib/kubescore), then, for a vgpu pod, the
// extender's fit and rating (lib/placement) turned into its 0..10
// priorities; the node is the best by kube-scheduler's plugin scores plus
// the extender's priority × weight × 10, and the GPUs the policy's on that
// node. A pod without vgpu resources goes to its own scheduler, modelled
// as kube-scheduler's default profile without the extender. The
// fragmentation policy's mix is first taught the running pods, as the
// extender's is after a restart. Nothing leaves.
func WhatIf(live *Live, w *Workload, sp ScoreProfile, o Options) ([]Outcome, error) {
	wi, err := newWhatIf(live, w, o)
	if err != nil {
		return nil, err
	}
	plain := kubescore.Profile{Weights: kubescore.DefaultWeights()}
	out := make([]Outcome, len(w.Tasks))
	for k := range w.Tasks {
		t := &w.Tasks[k]
		if t.Object == nil {
			return nil, fmt.Errorf("workload %s: task %s has no pod spec: the what-if reads a YAML stream of Pods", w.Source, t.Name)
		}
		prof := plain
		if t.Pod != nil {
			prof = sp.prof
		}
		if out[k], err = wi.place(k, t, prof); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// whatIf is the cluster as the pods placed so far leave it: vgpu's ledger,
// the hosts' free CPU and memory, kube-scheduler's view.
type whatIf struct {
	live  *Live
	o     Options
	l     *ledger.Ledger
	pol   placement.Policies
	hosts map[string]placement.HostFree
	snap  *kubescore.Cluster
}

// newWhatIf books the running pods, and teaches the fragmentation policy's
// mix the running pods' shapes, as the extender's is after a restart.
func newWhatIf(live *Live, w *Workload, o Options) (*whatIf, error) {
	wi := &whatIf{live: live, o: o, l: ledger.New(), pol: o.Policies,
		hosts: placement.HostBook(live.Nodes, live.Pods),
		snap:  kubescore.NewCluster(live.Nodes, live.Pods),
	}
	if err := setInventories(wi.l, live.Cluster, o); err != nil {
		return nil, err
	}
	if wi.pol.Node == settings.Fragmentation || wi.pol.GPU == settings.Fragmentation {
		wi.pol.Mix = newMix(w, o.FGD)
	}
	wi.pol.Host = func(node string) placement.HostFree { return wi.hosts[node] }
	for _, r := range live.Running {
		if r.Assignment != nil {
			// A running pod holds what it holds, even over a limit.
			_ = wi.l.Add(r.Key, *r.Assignment)
		}
		if wi.pol.Mix != nil && !o.FGD {
			wi.pol.Mix.Observe(r.Shape)
		}
	}
	if wi.pol.Mix != nil {
		wi.pol.Mix.Refresh()
	}
	return wi, nil
}

// place decides the k-th pod of the workload and books it where it lands.
func (wi *whatIf) place(k int, t *Task, prof kubescore.Profile) (Outcome, error) {
	vgpu := t.Pod != nil
	pod := admitted(t.Object, vgpu)
	res := Outcome{Pod: t.Name, Scheduler: pod.Spec.SchedulerName}
	res.Unmodelled = unmodelled(wi.snap, prof, pod, vgpu)
	if wi.pol.Mix != nil && !wi.o.FGD {
		wi.pol.Mix.Observe(t.Shape)
	}
	feasible, ratings, reasons := wi.filter(t, pod, prof)
	if len(feasible) == 0 {
		res.Pending = countReasons(reasons)
		if mayPreempt(pod) {
			res.Unmodelled = strings.Join(slices.DeleteFunc([]string{res.Unmodelled,
				"a pending pod with a priority class: kube-scheduler may preempt lower-priority pods to place it, which the model does not"}, func(s string) bool { return s == "" }), "; ")
		}
		return res, nil
	}
	priorities := make([]int64, len(feasible))
	if vgpu {
		priorities = placement.ExtenderPriorities(ratings)
	}
	plugins, err := wi.snap.Scores(prof, pod, feasible)
	if err != nil {
		return res, err
	}
	best, _ := kubescore.Best(prof, plugins, priorities)
	// feasible is in name order: of equally good nodes, the pods after
	// this one assume the first.
	res.Node = feasible[best[0]]
	if len(best) > 1 {
		for _, i := range best {
			res.Tied = append(res.Tied, feasible[i])
		}
	}
	if vgpu {
		a, err := placement.Bind(wi.l, fmt.Sprintf("whatif/%d", k), t.Pod, res.Node, wi.pol)
		if err != nil {
			return res, fmt.Errorf("pod %s: the node chosen refused the bind: %v", t.Name, err)
		}
		for _, c := range a.Containers {
			if !c.RunsWithApp() {
				continue
			}
			for _, d := range c.Devices {
				res.GPUs = append(res.GPUs, d.UUID)
			}
		}
	}
	wi.snap.Add(pod, res.Node)
	cpu, mem := kubescore.HostRequests(pod)
	h := wi.hosts[res.Node]
	h.CPUMilli, h.MemoryMiB = h.CPUMilli-cpu, h.MemoryMiB-mem
	wi.hosts[res.Node] = h
	return res, nil
}

// filter runs kube-scheduler's filters and, for a vgpu pod, the extender's
// fit and rating on every node: the nodes that pass, in name order, their
// ratings, and how many nodes each reason turned away.
func (wi *whatIf) filter(t *Task, pod *corev1.Pod, prof kubescore.Profile) ([]string, []float64, map[string]int) {
	var sc *placement.Scorer
	if t.Pod != nil {
		sc = placement.NewScorer(t.Pod, wi.pol)
	}
	var feasible []string
	var ratings []float64
	reasons := map[string]int{}
	for _, n := range wi.live.Nodes {
		why := wi.snap.Fits(prof, pod, n.Name)
		var rating float64
		if why == "" && sc != nil {
			if h := wi.l.Node(n.Name); h == nil {
				why = "no vGPU inventory"
			} else {
				rating, why = sc.Score(h)
			}
		}
		if why != "" {
			reasons[why]++
			continue
		}
		feasible, ratings = append(feasible, n.Name), append(ratings, rating)
	}
	return feasible, ratings, reasons
}

// unmodelled says what the model cannot judge for the pod, "" if nothing.
func unmodelled(snap *kubescore.Cluster, prof kubescore.Profile, pod *corev1.Pod, vgpu bool) string {
	var why []string
	switch {
	case vgpu && pod.Spec.SchedulerName != contract.DefaultSchedulerName:
		why = append(why, fmt.Sprintf("spec.schedulerName %s: vgpu's extender never sees the pod", pod.Spec.SchedulerName))
	case !vgpu && pod.Spec.SchedulerName != corev1.DefaultSchedulerName:
		why = append(why, fmt.Sprintf("spec.schedulerName %s: its configuration is unknown", pod.Spec.SchedulerName))
	}
	if len(pod.Spec.SchedulingGates) > 0 {
		why = append(why, "spec.schedulingGates: kube-scheduler leaves the pod pending until they are removed")
	}
	if err := snap.Unmodelled(prof, pod); err != nil {
		why = append(why, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return strings.Join(why, "; ")
}

// mayPreempt: kube-scheduler's DefaultPreemption may evict pods of lower
// priority for this pod when no node fits it. A workload's pods are not
// admitted yet, so a priority class counts as a priority.
func mayPreempt(pod *corev1.Pod) bool {
	if p := pod.Spec.PreemptionPolicy; p != nil && *p == corev1.PreemptNever {
		return false
	}
	return pod.Spec.PriorityClassName != "" || (pod.Spec.Priority != nil && *pod.Spec.Priority > 0)
}

// admitted is the pod as kube-scheduler receives it once the API server
// and vgpu's webhook have admitted it (docs/webhook.md): requests default
// to limits, a container that asks for a share without a count gets
// nvidia.com/gpu: 1, and a vgpu pod that names no scheduler goes to
// vgpu's.
func admitted(in *corev1.Pod, vgpu bool) *corev1.Pod {
	p := in.DeepCopy()
	if p.Namespace == "" {
		p.Namespace = "default"
	}
	gpu := corev1.ResourceName(contract.ResourceGPU)
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			r := &cs[i].Resources
			if _, has := r.Limits[gpu]; vgpu && !has && asksForShare(r.Limits) {
				r.Limits[gpu] = resource.MustParse("1")
			}
			for name, q := range r.Limits {
				if _, ok := r.Requests[name]; !ok {
					if r.Requests == nil {
						r.Requests = corev1.ResourceList{}
					}
					r.Requests[name] = q.DeepCopy()
				}
			}
		}
	}
	if p.Spec.SchedulerName == "" || p.Spec.SchedulerName == corev1.DefaultSchedulerName {
		p.Spec.SchedulerName = corev1.DefaultSchedulerName
		if vgpu {
			p.Spec.SchedulerName = contract.DefaultSchedulerName
		}
	}
	return p
}

func asksForShare(limits corev1.ResourceList) bool {
	for _, name := range contract.Resources[1:] {
		if _, ok := limits[corev1.ResourceName(name)]; ok {
			return true
		}
	}
	return false
}

// countReasons lists why nodes were rejected, the commonest first, with
// how many nodes gave each.
func countReasons(reasons map[string]int) string {
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if reasons[keys[i]] != reasons[keys[j]] {
			return reasons[keys[i]] > reasons[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	rest, restNodes := 0, 0
	for i, k := range keys {
		if i < maxReasons {
			parts = append(parts, fmt.Sprintf("%s (%s)", k, nodeCount(reasons[k])))
			continue
		}
		rest, restNodes = rest+1, restNodes+reasons[k]
	}
	if rest > 0 {
		parts = append(parts, fmt.Sprintf("%d other reasons (%s)", rest, nodeCount(restNodes)))
	}
	return strings.Join(parts, "; ")
}

// maxReasons is how many reasons a pending pod's note spells out; on a
// large cluster the extender's, which count GPUs, differ from node to
// node.
const maxReasons = 4

func nodeCount(n int) string {
	if n == 1 {
		return "1 node"
	}
	return fmt.Sprintf("%d nodes", n)
}
