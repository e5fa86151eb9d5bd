// Package binder binds a pod to the node kube-scheduler chose: it picks the
// GPUs, books them in the ledger at once (so that concurrent filters and
// binds see them), writes the assignment on the pod in one patch and
// creates the Binding. Any failure undoes the booking.
package binder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/vgpu-io/vgpu/cmd/extender/internal/state"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/config"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/request"
)

// Results of a bind, for metrics.
const (
	Bound    = "bound"
	Already  = "already"
	LostRace = "lost_race"
	Failed   = "error"
)

// Binder binds pods. It is safe for concurrent use.
type Binder struct {
	CS       kubernetes.Interface
	State    *state.State
	Settings func() config.Settings
	Log      *zap.Logger
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
		return Bound, b.binding(ctx, args)
	}
	if err != nil {
		return Failed, fmt.Errorf("pod %s: %v", ref, err)
	}
	key := string(args.PodUID)

	a, reused := b.reuse(pod, args.Node)
	if !reused {
		// Whatever the pod still holds is from an earlier attempt that
		// did not end in a Binding: the scheduler would not call bind
		// otherwise. Until this attempt's patch is seen, the informer's
		// views of the pod are older than the booking made here.
		b.State.Expect(pod.UID, planning)
		b.State.Ledger.Release(key)
		a, err = placement.Bind(b.State.Ledger, key, req, args.Node, placement.DefaultPolicies(b.Settings()))
		if err != nil {
			b.State.Unexpect(pod.UID)
			var fe *placement.FitError
			if errors.As(err, &fe) {
				return LostRace, fmt.Errorf("pod %s no longer fits node %s (a concurrent bind took the GPUs): %s", ref, args.Node, fe.Reason)
			}
			return Failed, fmt.Errorf("pod %s on node %s: %w", ref, args.Node, err)
		}
		if err := b.annotate(ctx, pod, a); err != nil {
			b.State.Ledger.Release(key)
			b.State.Unexpect(pod.UID)
			return Failed, err
		}
	}
	if err := b.binding(ctx, args); err != nil {
		if ok := b.boundHere(ctx, args); ok {
			return Already, nil
		}
		b.undo(pod, key)
		return Failed, err
	}
	b.Log.Debug("pod bound", zap.String("pod", ref), zap.String("node", args.Node), zap.Any("assignment", a))
	if reused {
		return Already, nil
	}
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

// reuse books the assignment an earlier attempt wrote for this node, if
// any, so that a retried bind creates the Binding with the GPUs the pod's
// annotation already names.
func (b *Binder) reuse(pod *corev1.Pod, node string) (assign.Pod, bool) {
	raw, ok := pod.Annotations[contract.AnnotationAssignment]
	if !ok {
		return assign.Pod{}, false
	}
	a, err := annotation.DecodeAssignment(raw)
	if err != nil || a.Node != node {
		return assign.Pod{}, false
	}
	key := string(pod.UID)
	err = b.State.Ledger.Reserve(key, a)
	if errors.Is(err, ledger.ErrConflict) {
		b.State.Ledger.Release(key)
		err = b.State.Ledger.Reserve(key, a)
	}
	return a, err == nil
}

// annotate writes the assignment in one patch, guarded by the pod's uid.
func (b *Binder) annotate(ctx context.Context, pod *corev1.Pod, a assign.Pod) error {
	raw, err := annotation.EncodeAssignment(a)
	if err != nil {
		return err
	}
	patch, err := mergePatch(pod.UID, &raw)
	if err != nil {
		return err
	}
	b.State.Expect(pod.UID, raw)
	if _, err := b.CS.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("pod %s/%s: writing %s: %w", pod.Namespace, pod.Name, contract.AnnotationAssignment, err)
	}
	return nil
}

func (b *Binder) binding(ctx context.Context, args *extenderv1.ExtenderBindingArgs) error {
	err := b.CS.CoreV1().Pods(args.PodNamespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: args.PodNamespace, Name: args.PodName, UID: args.PodUID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: args.Node},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("binding pod %s/%s to node %s: %w", args.PodNamespace, args.PodName, args.Node, err)
	}
	return nil
}

// boundHere checks, after a failed Binding, whether the pod is bound to the
// node anyway (an earlier attempt's Binding went through).
func (b *Binder) boundHere(ctx context.Context, args *extenderv1.ExtenderBindingArgs) bool {
	p, err := b.CS.CoreV1().Pods(args.PodNamespace).Get(ctx, args.PodName, metav1.GetOptions{})
	return err == nil && p.UID == args.PodUID && p.Spec.NodeName == args.Node
}

// undo returns the GPUs and removes the annotation, so that neither this
// extender nor the next one (after a restart) counts them for a pod that
// is not bound. If the removal fails the annotation stays and the GPUs stay
// booked until the pod is bound elsewhere or deleted: wasted, never
// double-booked.
func (b *Binder) undo(pod *corev1.Pod, key string) {
	// Expect the removal first: the informer may still deliver the patch
	// that wrote the assignment, which must not book it again.
	b.State.Expect(pod.UID, "")
	b.State.Ledger.Release(key)
	patch, _ := mergePatch(pod.UID, nil)
	// The request's context may be what failed; the cleanup gets its own.
	ctx, cancel := context.WithTimeout(context.Background(), defaultTimeout)
	defer cancel()
	_, err := b.CS.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		b.State.Unexpect(pod.UID)
		b.Log.Warn("could not remove the assignment of an unbound pod; its GPUs stay booked until it is bound or deleted",
			zap.String("pod", pod.Namespace+"/"+pod.Name), zap.Error(err))
	}
}

// planning is expected while a bind chooses GPUs: no annotation equals it,
// so every informer view of the pod is ignored until the bind's own patch.
const planning = "\x00planning"

// defaultTimeout bounds the cleanup after a failed bind.
const defaultTimeout = 10 * time.Second

// mergePatch sets (value != nil) or removes the assignment annotation. The
// uid in the patch makes the API server refuse it for a pod recreated
// under the same name, since a uid cannot change.
func mergePatch(uid types.UID, value *string) ([]byte, error) {
	return json.Marshal(map[string]any{
		"metadata": map[string]any{
			"uid":         uid,
			"annotations": map[string]*string{contract.AnnotationAssignment: value},
		},
	})
}
