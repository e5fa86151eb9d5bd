// Package admission decides what happens to a pod at creation: pods that ask
// for vgpu resources are validated with lib/request's rules and, on the
// mutating path, routed to vgpu's scheduler and given the default
// nvidia.com/gpu; every other pod passes untouched.
package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/request"
)

// DefaultScheduler is what the API server puts in spec.schedulerName when a
// pod names none; only such pods are rerouted, a pod that names another
// scheduler keeps it.
const DefaultScheduler = corev1.DefaultSchedulerName

// OptOutValue of contract.LabelOptOut on a pod (or its namespace, which the
// webhook configuration's namespaceSelector handles) skips the webhook.
const OptOutValue = "disabled"

// Capacity reports the memory in MiB of the largest GPU in the cluster, as
// the scheduler counts it; ok is false while no node has published GPUs.
type Capacity interface {
	LargestGPU() (mib int64, ok bool)
}

// Reviewer holds the policy of both webhooks.
type Reviewer struct {
	SchedulerName string
	Capacity      Capacity
	// DRA, when set, turns pods into claims instead of routing them to
	// SchedulerName (docs/dra.md).
	DRA *DRA
}

// Outcome labels what a review did, for metrics and logs.
type Outcome string

const (
	Ignored Outcome = "ignored" // not a vgpu pod, or opted out
	Allowed Outcome = "allowed" // a valid vgpu pod, nothing to change
	Patched Outcome = "patched" // a valid vgpu pod, mutated
	Denied  Outcome = "denied"  // an invalid vgpu pod
	Errored Outcome = "error"   // the review itself was unusable
)

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Review answers one AdmissionRequest. mutate selects the mutating webhook's
// behaviour; the validating webhook runs the same checks on the final pod.
func (r *Reviewer) Review(req *admissionv1.AdmissionRequest, mutate bool) (*admissionv1.AdmissionResponse, Outcome) {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" {
		// Only pods are registered; anything else is let through rather
		// than blocked by a misconfigured rule.
		return resp, Ignored
	}
	if req.Operation != admissionv1.Create {
		return resp, Ignored
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(resp, fmt.Sprintf("vgpu webhook: pod object cannot be decoded: %v", err)), Errored
	}
	if pod.Labels[contract.LabelOptOut] == OptOutValue {
		return resp, Ignored
	}
	name := podName(&pod, req)
	parsed, err := request.FromPod(&pod)
	if errors.Is(err, request.ErrNoGPU) {
		return resp, Ignored
	}
	if err != nil {
		return deny(resp, fmt.Sprintf("pod %s: %s", name, oneLine(err))), Denied
	}
	if largest, ok := r.Capacity.LargestGPU(); ok {
		if err := request.CheckMemoryFits(parsed, largest); err != nil {
			return deny(resp, fmt.Sprintf("pod %s: %s", name, oneLine(err))), Denied
		}
	}
	if !mutate {
		return resp, Allowed
	}
	var ops []patchOp
	if r.DRA != nil {
		if pod.Namespace == "" {
			pod.Namespace = req.Namespace
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if ops, err = r.DRA.ops(ctx, &pod, parsed, req.DryRun != nil && *req.DryRun); err != nil {
			return deny(resp, fmt.Sprintf("pod %s: %s", name, oneLine(err))), Denied
		}
	} else {
		ops = r.patch(&pod)
	}
	if len(ops) == 0 {
		return resp, Allowed
	}
	body, err := json.Marshal(ops)
	if err != nil {
		return deny(resp, fmt.Sprintf("vgpu webhook: encoding the patch: %v", err)), Errored
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = body, &pt
	return resp, Patched
}

// patch routes the pod to vgpu's scheduler and adds nvidia.com/gpu: 1 to
// every container that names a share but no count, in limits and in
// requests: defaulting of requests from limits ran before admission, and the
// scheduler counts requests.
func (r *Reviewer) patch(pod *corev1.Pod) []patchOp {
	var ops []patchOp
	if pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == DefaultScheduler {
		ops = append(ops, patchOp{Op: "add", Path: "/spec/schedulerName", Value: r.SchedulerName})
	}
	gpu := corev1.ResourceName(contract.ResourceGPU)
	key := escape(contract.ResourceGPU)
	for _, group := range []struct {
		path string
		cs   []corev1.Container
	}{{"/spec/initContainers", pod.Spec.InitContainers}, {"/spec/containers", pod.Spec.Containers}} {
		for i, c := range group.cs {
			if _, has := c.Resources.Limits[gpu]; has || !asksForShare(&c) {
				continue
			}
			base := fmt.Sprintf("%s/%d/resources", group.path, i)
			for _, field := range []struct {
				name string
				list corev1.ResourceList
			}{{"limits", c.Resources.Limits}, {"requests", c.Resources.Requests}} {
				if field.list == nil {
					ops = append(ops, patchOp{Op: "add", Path: base + "/" + field.name, Value: map[string]string{contract.ResourceGPU: "1"}})
				} else {
					ops = append(ops, patchOp{Op: "add", Path: base + "/" + field.name + "/" + key, Value: "1"})
				}
			}
		}
	}
	return ops
}

func asksForShare(c *corev1.Container) bool {
	for _, name := range contract.Resources[1:] {
		if _, ok := c.Resources.Limits[corev1.ResourceName(name)]; ok {
			return true
		}
	}
	return false
}

// escape makes a map key into a JSON pointer token (RFC 6901).
func escape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

func podName(pod *corev1.Pod, req *admissionv1.AdmissionRequest) string {
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	n := pod.Name
	if n == "" {
		n = pod.GenerateName + "*"
	}
	return ns + "/" + n
}

// oneLine joins the lines of errors.Join, which kubectl would otherwise
// print as a ragged block.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func deny(resp *admissionv1.AdmissionResponse, msg string) *admissionv1.AdmissionResponse {
	resp.Allowed = false
	resp.Result = &metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    422,
		Reason:  metav1.StatusReasonInvalid,
		Message: msg,
	}
	return resp
}
