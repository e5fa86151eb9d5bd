package simulate

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WhatIfReport is the what-if's answer, for -o json|yaml as for the table.
type WhatIfReport struct {
	Cluster string `json:"cluster"`
	// Nodes counts every node; VGPUNodes those with a vGPU inventory and
	// GPUs their GPUs.
	Nodes     int `json:"nodes"`
	VGPUNodes int `json:"vgpuNodes"`
	GPUs      int `json:"gpus"`
	// BoundPods counts the unfinished pods on the nodes; WaitingPods those
	// not bound yet, which the what-if leaves out.
	BoundPods    int          `json:"boundPods"`
	WaitingPods  int          `json:"waitingPods"`
	Workload     string       `json:"workload"`
	Pods         int          `json:"pods"`
	ScoreProfile ScoreProfile `json:"scoreProfile"`
	// Sampling says, for a cluster where kube-scheduler scores only a
	// sample of the feasible nodes, what that means for the answers.
	Sampling string           `json:"sampling,omitempty"`
	Policies []PolicyOutcomes `json:"policies"`
}

// PolicyOutcomes is one policy's answer for every pod, in order.
type PolicyOutcomes struct {
	Policy  string    `json:"policy"`
	Pending int       `json:"pending"`
	Pods    []Outcome `json:"pods"`
}

// newWhatIfReport summarises the cluster and the profile; the caller adds
// the policies.
func newWhatIfReport(live *Live, w *Workload, sp ScoreProfile) *WhatIfReport {
	r := &WhatIfReport{Cluster: live.Cluster.Source, Nodes: len(live.Nodes), VGPUNodes: len(live.Cluster.Nodes),
		GPUs: live.Cluster.GPUCount(), BoundPods: len(live.Pods), WaitingPods: live.Waiting,
		Workload: w.Source, Pods: len(w.Tasks), ScoreProfile: sp}
	pct := AdaptivePercent(len(live.Nodes))
	if p := sp.PercentageOfNodesToScore; p != nil && *p > 0 {
		pct = int(*p)
	}
	if want := sampleSize(len(live.Nodes), pct); want < len(live.Nodes) {
		r.Sampling = fmt.Sprintf("kube-scheduler stops looking once it has found %d feasible nodes of the %d (percentageOfNodesToScore %d %%), "+
			"starting where the previous pod stopped; the what-if ranks every feasible node, so kube-scheduler may settle for one it ranks lower", want, len(live.Nodes), pct)
	}
	return r
}

func (r *WhatIfReport) add(policy string, outcomes []Outcome) {
	p := PolicyOutcomes{Policy: policy, Pods: outcomes}
	for _, o := range outcomes {
		if o.Node == "" {
			p.Pending++
		}
	}
	r.Policies = append(r.Policies, p)
}

// WriteTable prints one row per new pod, one column per policy, and then
// the notes: ties, pending pods' reasons, what the model cannot judge.
func (r *WhatIfReport) WriteTable(out io.Writer) error {
	fmt.Fprintf(out, "%s: %d nodes (%d with vGPUs, %d GPUs), %d pods bound · %d new pods from %s, placed in order\n",
		r.Cluster, r.Nodes, r.VGPUNodes, r.GPUs, r.BoundPods, r.Pods, r.Workload)
	fmt.Fprintln(out, r.ScoreProfile.describe())
	if r.WaitingPods > 0 {
		fmt.Fprintf(out, "%d pods wait for a node in the cluster now; the what-if does not place them, though kube-scheduler may place them first\n", r.WaitingPods)
	}
	if r.Sampling != "" {
		fmt.Fprintln(out, r.Sampling)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	cells := []string{"pod"}
	for _, p := range r.Policies {
		cells = append(cells, p.Policy)
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	notes := &noteBook{policies: len(r.Policies)}
	for k := 0; k < r.Pods; k++ {
		cells = cells[:0]
		for i, p := range r.Policies {
			o := &p.Pods[k]
			if i == 0 {
				cells = append(cells, o.Pod)
			}
			cells = append(cells, cell(o))
			switch {
			case o.Node == "":
				notes.add(k, o.Pod, "pending: "+o.Pending, p.Policy)
			case len(o.Tied) > 1:
				notes.add(k, o.Pod, fmt.Sprintf("%d equally good nodes, %s: kube-scheduler picks one at random; the pods after it assume %s",
					len(o.Tied), strings.Join(o.Tied, ", "), o.Node), p.Policy)
			}
			if o.Unmodelled != "" {
				notes.add(k, o.Pod, "may land elsewhere: "+o.Unmodelled, p.Policy)
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	cells = []string{"pending"}
	for _, p := range r.Policies {
		cells = append(cells, fmt.Sprint(p.Pending))
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	if err := tw.Flush(); err != nil {
		return err
	}
	notes.write(out)
	return nil
}

// cell is one pod under one policy: its node and GPUs, how many other
// nodes tie with it, and a mark where the model cannot judge the pod.
func cell(o *Outcome) string {
	if o.Node == "" {
		return "pending"
	}
	s := o.Node
	if len(o.GPUs) > 0 {
		s += " [" + strings.Join(o.GPUs, ",") + "]"
	}
	if len(o.Tied) > 1 {
		s += fmt.Sprintf(" (or %d more)", len(o.Tied)-1)
	}
	if o.Unmodelled != "" {
		s += " (unsure)"
	}
	return s
}

// noteBook gathers the notes of the table, one per pod and text, with the
// policies it holds for.
type noteBook struct {
	policies int
	notes    []note
}

type note struct {
	row       int
	pod, text string
	policies  []string
}

func (b *noteBook) add(row int, pod, text, policy string) {
	for i := range b.notes {
		if n := &b.notes[i]; n.row == row && n.text == text {
			n.policies = append(n.policies, policy)
			return
		}
	}
	b.notes = append(b.notes, note{row: row, pod: pod, text: text, policies: []string{policy}})
}

func (b *noteBook) write(out io.Writer) {
	if len(b.notes) == 0 {
		return
	}
	fmt.Fprintln(out, "\nnotes:")
	for _, n := range b.notes {
		which := strings.Join(n.policies, ", ")
		if len(n.policies) == b.policies && b.policies > 1 {
			which = "every policy"
		}
		fmt.Fprintf(out, "  %s (%s): %s\n", n.pod, which, n.text)
	}
}
