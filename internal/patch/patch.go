// Package patch is the one way vgpu writes annotations and status fields:
// patches built by encoding/json (never by string formatting, whose quoting
// is Go's, not JSON's), sent as JSON merge patches that leave every other
// annotation alone, or as RFC 6902 JSON patches where a precondition is
// needed.
package patch

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Annotations returns the merge patch that sets each of kv and leaves the
// object's other annotations alone.
func Annotations(kv map[string]string) []byte {
	return mustJSON(map[string]any{"metadata": map[string]any{"annotations": kv}})
}

// PodAnnotations sets annotations on a pod.
func PodAnnotations(ctx context.Context, cs kubernetes.Interface, namespace, name string, kv map[string]string) error {
	_, err := cs.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, Annotations(kv), metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("pod %s/%s: annotate: %w", namespace, name, err)
	}
	return nil
}

// NodeAnnotations sets annotations on a Node.
func NodeAnnotations(ctx context.Context, cs kubernetes.Interface, name string, kv map[string]string) error {
	_, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, Annotations(kv), metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("node %s: annotate: %w", name, err)
	}
	return nil
}

// NodeResources sets capacity and allocatable of the given resources in a
// Node's status, leaving the other resources alone.
func NodeResources(ctx context.Context, cs kubernetes.Interface, name string, capacity, allocatable corev1.ResourceList) error {
	body := mustJSON(map[string]any{"status": map[string]any{"capacity": capacity, "allocatable": allocatable}})
	if _, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("node %s: write status capacity: %w", name, err)
	}
	return nil
}

// Op is one RFC 6902 operation.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// JSON returns the RFC 6902 patch of ops.
func JSON(ops ...Op) []byte { return mustJSON(ops) }

// mustJSON encodes values that are maps, slices and strings of this
// package's own making, which always encode.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("patch: %v", err))
	}
	return b
}
