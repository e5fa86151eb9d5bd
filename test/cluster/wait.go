package cluster

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// PodCondition is what WaitForPods waits for.
type PodCondition struct {
	Name string
	OK   func(*corev1.Pod) bool
}

var (
	// PodBound: the scheduler (or anyone) has set spec.nodeName.
	PodBound = PodCondition{"bound", func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }}
	// PodRunning: kwok has moved the bound pod to phase Running.
	PodRunning = PodCondition{"Running", func(p *corev1.Pod) bool {
		return p.Spec.NodeName != "" && p.Status.Phase == corev1.PodRunning
	}}
)

// WaitForPods waits until at least want pods in namespace matching
// labelSelector satisfy cond, and returns them. On timeout the error names
// the pods that do not, with the scheduler's reason when it gave one.
func (c *Cluster) WaitForPods(ctx context.Context, namespace, labelSelector string, want int, cond PodCondition) ([]corev1.Pod, error) {
	var ok, notOK []corev1.Pod
	err := waitFor(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		list, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: labelSelector})
		if err != nil {
			return false, nil // the API server may be restarting; retry
		}
		ok, notOK = ok[:0], notOK[:0]
		for i := range list.Items {
			if cond.OK(&list.Items[i]) {
				ok = append(ok, list.Items[i])
			} else {
				notOK = append(notOK, list.Items[i])
			}
		}
		return len(ok) >= want, nil
	})
	if err != nil {
		var why []string
		for i, p := range notOK {
			if i == 5 {
				why = append(why, fmt.Sprintf("… and %d more", len(notOK)-5))
				break
			}
			why = append(why, p.Name+": "+podWhy(&p))
		}
		return ok, fmt.Errorf("%d/%d pods in %q (selector %q) %s: %w; not %s: %s",
			len(ok), want, namespace, labelSelector, cond.Name, err, cond.Name, strings.Join(why, "; "))
	}
	return ok, nil
}

// podWhy is the pod's phase and scheduling reason, for error messages.
func podWhy(p *corev1.Pod) string {
	s := string(p.Status.Phase)
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			s += fmt.Sprintf(" (%s: %s)", c.Reason, c.Message)
		}
	}
	return s
}

// WaitForNodesReady waits until each named node is Ready and no longer
// carries the not-ready taint, so the scheduler will use it.
func (c *Cluster) WaitForNodesReady(ctx context.Context, names ...string) error {
	pending := slices.Clone(names)
	err := waitFor(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready := make(map[string]bool, len(list.Items))
		for i := range list.Items {
			n := &list.Items[i]
			ready[n.Name] = nodeReady(n) && !hasTaint(n, TaintNotReady)
		}
		pending = slices.DeleteFunc(pending, func(n string) bool { return ready[n] })
		return len(pending) == 0, nil
	})
	if err != nil {
		if len(pending) > 5 {
			pending = append(pending[:5], fmt.Sprintf("… and %d more", len(pending)-5))
		}
		return fmt.Errorf("nodes not Ready and untainted: %v: %w", pending, err)
	}
	return nil
}

// Dump writes what a failing test needs to see: nodes with their GPU
// capacity, taints and vgpu annotations; pods with node, phase, scheduling
// reason and annotations; recent events; the tail of every component log.
func (c *Cluster) Dump(ctx context.Context, w io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fmt.Fprintf(w, "==== cluster state (%s)\n", c.Dir)
	if nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(w, "nodes: %v\n", err)
	} else {
		fmt.Fprintf(w, "-- %d nodes\n", len(nodes.Items))
		for i := range nodes.Items {
			n := &nodes.Items[i]
			gpu := n.Status.Allocatable[contract.ResourceGPU]
			fmt.Fprintf(w, "%s ready=%v gpu=%s taints=%v%s\n", n.Name, nodeReady(n), gpu.String(), n.Spec.Taints, vgpuAnnotations(n.Annotations))
		}
	}
	if pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(w, "pods: %v\n", err)
	} else {
		fmt.Fprintf(w, "-- %d pods\n", len(pods.Items))
		for i := range pods.Items {
			p := &pods.Items[i]
			fmt.Fprintf(w, "%s/%s node=%q %s%s\n", p.Namespace, p.Name, p.Spec.NodeName, podWhy(p), vgpuAnnotations(p.Annotations))
		}
	}
	if evs, err := c.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(w, "events: %v\n", err)
	} else {
		items := evs.Items
		sort.Slice(items, func(i, j int) bool { return eventTime(&items[i]).Before(eventTime(&items[j])) })
		if len(items) > 50 {
			items = items[len(items)-50:]
		}
		fmt.Fprintf(w, "-- last %d of %d events\n", len(items), len(evs.Items))
		for _, e := range items {
			fmt.Fprintf(w, "%s %s %s/%s %s: %s (x%d)\n", eventTime(&e).Format(time.TimeOnly), e.Type,
				strings.ToLower(e.InvolvedObject.Kind), e.InvolvedObject.Name, e.Reason, e.Message, max(e.Count, 1))
		}
	}
	c.mu.Lock()
	order := slices.Clone(c.order)
	c.mu.Unlock()
	for _, name := range order {
		fmt.Fprintf(w, "-- tail of %s\n%s\n", c.LogPath(name), tail(c.LogPath(name), 15))
	}
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	default:
		return e.CreationTimestamp.Time
	}
}

func vgpuAnnotations(a map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if strings.Contains(k, "vgpu.io/") || strings.HasPrefix(k, "nvidia.com/") {
			fmt.Fprintf(&b, "\n    %s=%s", k, a[k])
		}
	}
	return b.String()
}
