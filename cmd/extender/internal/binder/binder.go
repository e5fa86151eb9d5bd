// Package binder binds a pod to the node kube-scheduler chose: it picks the
// GPUs and books them in the ledger at once (so that concurrent filters and
// binds see them), then creates the Binding with the assignment as an
// annotation: the API server sets spec.nodeName and vgpu.io/assignment in
// one write, so a pod never carries an assignment without its node, nor a
// node without its assignment. Any failure undoes the booking.
package binder

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/vgpu-io/vgpu/cmd/extender/internal/state"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// Results of a bind, for metrics.
const (
	Bound    = "bound"
	Already  = "already"
	LostRace = "lost_race"
	Failed   = "error"
)

// planning is expected while a bind chooses GPUs: no annotation equals it,
// so every informer view of the pod is ignored until the bind's own write.
const planning = "\x00planning"

// Binder binds pods. It is safe for concurrent use.
type Binder struct {
	CS       kubernetes.Interface
	State    *state.State
	Settings func() settings.Settings
	// Host tells the fragmentation policy a node's free CPU and memory;
	// nil: unknown.
	Host func(node string) placement.HostFree
	Log  *zap.Logger
}

// Bind binds one pod and reports the result label with the error.
func (b *Binder) Bind(ctx context.Context, args *extenderv1.ExtenderBindingArgs) (string, error) {
	pod, err := b.pod(ctx, args)
	if err != nil {
		return Failed, err
	}
	ref := args.PodNamespace + "/" + args.PodName
	if pod.Spec.NodeName != "" {
		if pod.Spec.NodeName == args.Node {
			return Already, nil
		}
		return Failed, fmt.Errorf("pod %s is already bound to node %s, not %s", ref, pod.Spec.NodeName, args.Node)
	}
	req, err := request.FromPod(pod)
	if errors.Is(err, request.ErrNoGPU) {
		// Asked for gpu: 0 only; nothing to book.
		return Bound, b.binding(ctx, args, nil)
	}
	if err != nil {
		return Failed, fmt.Errorf("pod %s: %v", ref, err)
	}
	key := string(args.PodUID)

	// Whatever the pod still holds is from an earlier attempt that did not
	// end in a Binding: the scheduler would not call bind otherwise. Until
	// this attempt's write is seen, the informer's views of the pod are
	// older than the booking made here.
	b.State.Expect(pod.UID, planning)
	b.State.Ledger.Release(key)
	pol := placement.DefaultPolicies(b.Settings())
	pol.Mix, pol.Host = b.State.Mix, b.Host
	a, err := placement.Bind(b.State.Ledger, key, req, args.Node, pol)
	if err != nil {
		b.State.Unexpect(pod.UID)
		var fe *placement.FitError
		if errors.As(err, &fe) {
			return LostRace, fmt.Errorf("pod %s no longer fits node %s (a concurrent bind took the GPUs): %s", ref, args.Node, fe.Reason)
		}
		return Failed, fmt.Errorf("pod %s on node %s: %w", ref, args.Node, err)
	}
	raw, err := annotation.EncodeAssignment(a)
	if err != nil {
		b.State.Ledger.Release(key)
		b.State.Unexpect(pod.UID)
		return Failed, err
	}
	b.State.Expect(pod.UID, raw)
	if err := b.binding(ctx, args, map[string]string{contract.AnnotationAssignment: raw}); err != nil {
		b.State.Ledger.Release(key)
		b.State.Unexpect(pod.UID)
		if bound, ok := b.boundHere(ctx, args); ok {
			// An earlier attempt's Binding went through: book what it
			// wrote (the informer's view of it may have been ignored).
			if prev, derr := annotation.DecodePodAssignment(bound); derr == nil {
				_ = b.State.Ledger.Add(key, prev)
			}
			return Already, nil
		}
		return Failed, err
	}
	b.Log.Debug("pod bound", zap.String("pod", ref), zap.String("node", args.Node), zap.String("assignment", raw))
	return Bound, nil
}

// pod reads the pod from the cache, or from the API server when the cache
// has not seen it yet (or saw an earlier pod of the same name).
func (b *Binder) pod(ctx context.Context, args *extenderv1.ExtenderBindingArgs) (*corev1.Pod, error) {
	if p, ok := b.State.Pod(args.PodNamespace, args.PodName); ok && p.UID == args.PodUID {
		return p, nil
	}
	p, err := b.CS.CoreV1().Pods(args.PodNamespace).Get(ctx, args.PodName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", args.PodNamespace, args.PodName, err)
	}
	if p.UID != args.PodUID {
		return nil, fmt.Errorf("pod %s/%s has uid %s, not %s: it was recreated", args.PodNamespace, args.PodName, p.UID, args.PodUID)
	}
	return p, nil
}

// binding creates the Binding; its annotations are set on the pod with
// spec.nodeName, and its uid makes the API server refuse a recreated pod.
func (b *Binder) binding(ctx context.Context, args *extenderv1.ExtenderBindingArgs, annotations map[string]string) error {
	err := b.CS.CoreV1().Pods(args.PodNamespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: args.PodNamespace, Name: args.PodName, UID: args.PodUID, Annotations: annotations},
		Target:     corev1.ObjectReference{Kind: "Node", Name: args.Node},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("binding pod %s/%s to node %s: %w", args.PodNamespace, args.PodName, args.Node, err)
	}
	return nil
}

// boundHere checks, after a failed Binding, whether the pod is bound to the
// node anyway (an earlier attempt's Binding went through).
func (b *Binder) boundHere(ctx context.Context, args *extenderv1.ExtenderBindingArgs) (*corev1.Pod, bool) {
	p, err := b.CS.CoreV1().Pods(args.PodNamespace).Get(ctx, args.PodName, metav1.GetOptions{})
	if err != nil || p.UID != args.PodUID || p.Spec.NodeName != args.Node {
		return nil, false
	}
	return p, true
}
