package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/request"
)

// Templates makes sure a ResourceClaimTemplate exists.
type Templates interface {
	Ensure(ctx context.Context, namespace, name string, spec resourcev1.ResourceClaimSpec) error
}

// Models lists the GPU kinds the cluster's DRA slices offer.
type Models interface {
	Models() []dra.Model
}

// DRA turns seed-style pods into pods with claims
// (docs/dra.md#how-seed-style-pods-map-to-claims).
type DRA struct {
	Templates Templates
	Models    Models
	// SchedulerName, when set, is given to the pods this turns into claims
	// if they name no scheduler: a profile of the cluster's own
	// kube-scheduler tuned for DRA pods (docs/dra.md#options-measured).
	// Empty leaves them to the default scheduler.
	SchedulerName string
}

// claimName is the pod-level claim of one container; pod claim names are
// DNS labels, so a long container name is hashed.
func claimName(container string) string {
	n := "vgpu-" + container
	if len(n) <= 63 {
		return n
	}
	sum := sha256.Sum256([]byte(container))
	return "vgpu-" + hex.EncodeToString(sum[:8])
}

// ops builds the patch: a claim per container from a shared template, the
// container's reference to it, and no nvidia.com/* resources left for
// kube-scheduler to look for on a node. Templates are created unless dryRun.
func (d *DRA) ops(ctx context.Context, pod *corev1.Pod, parsed *request.Pod, dryRun bool) ([]patchOp, error) {
	models := d.Models.Models()
	var ops []patchOp
	if d.SchedulerName != "" && (pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == DefaultScheduler) {
		ops = append(ops, patchOp{Op: "add", Path: "/spec/schedulerName", Value: d.SchedulerName})
	}
	if pod.Spec.ResourceClaims == nil {
		ops = append(ops, patchOp{Op: "add", Path: "/spec/resourceClaims", Value: []any{}})
	}
	for _, c := range parsed.Containers {
		spec, err := dra.ClaimSpec(c, parsed.Selector, models)
		if err != nil {
			return nil, err
		}
		tmpl := dra.TemplateName(spec)
		if !dryRun {
			if err := d.Templates.Ensure(ctx, pod.Namespace, tmpl, spec); err != nil {
				return nil, fmt.Errorf("%s: ResourceClaimTemplate %s/%s: %w", c.Ref(), pod.Namespace, tmpl, err)
			}
		}
		name := claimName(c.Name)
		ops = append(ops, patchOp{Op: "add", Path: "/spec/resourceClaims/-",
			Value: corev1.PodResourceClaim{Name: name, ResourceClaimTemplateName: &tmpl}})
		path, ctr := containerOf(pod, c)
		if ctr.Resources.Claims == nil {
			ops = append(ops, patchOp{Op: "add", Path: path + "/resources/claims", Value: []any{}})
		}
		ops = append(ops, patchOp{Op: "add", Path: path + "/resources/claims/-", Value: corev1.ResourceClaim{Name: name}})
		for _, field := range []struct {
			name string
			list corev1.ResourceList
		}{{"limits", ctr.Resources.Limits}, {"requests", ctr.Resources.Requests}} {
			for _, r := range contract.Resources {
				if _, ok := field.list[corev1.ResourceName(r)]; ok {
					ops = append(ops, patchOp{Op: "remove", Path: path + "/resources/" + field.name + "/" + escape(r)})
				}
			}
		}
	}
	return ops, nil
}

// containerOf finds a parsed container in the pod spec: its JSON pointer
// and the container.
func containerOf(pod *corev1.Pod, c request.Container) (string, *corev1.Container) {
	list, base := pod.Spec.Containers, "/spec/containers"
	if c.Init {
		list, base = pod.Spec.InitContainers, "/spec/initContainers"
	}
	for i := range list {
		if list[i].Name == c.Name {
			return fmt.Sprintf("%s/%d", base, i), &list[i]
		}
	}
	// lib/request only lists containers of this pod.
	panic(fmt.Sprintf("container %q not in pod", c.Name))
}
