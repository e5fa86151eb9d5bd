// Package draslice publishes a node's GPUs as one ResourceSlice of vgpu's DRA
// driver (docs/dra.md#what-the-node-agent-publishes), and takes down what
// the other path left behind, so that no GPU is booked by both paths.
package draslice

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"
	resourcev1 "k8s.io/api/resource/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/reconcile"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/dra"
)

// SliceName is the name of the node's one slice.
func SliceName(node string) string { return node + "-" + dra.Driver }

// Publisher keeps one node's ResourceSlice equal to its GPUs and settings.
type Publisher struct {
	Node   string
	Client kubernetes.Interface
	State  *gpustate.State
	Log    *zap.Logger
}

// Run reconciles on every state change and every kick (slice events) until
// ctx ends; a failed write is retried with backoff.
func (p *Publisher) Run(ctx context.Context, kick <-chan struct{}) {
	reconcile.Loop(ctx, "resourceslice", p.State, kick, 0, p.Reconcile, func(err error, in time.Duration) {
		p.Log.Warn("publishing the ResourceSlice failed; retrying", zap.String("node", p.Node), zap.Duration("in", in), zap.Error(err))
	})
}

// Reconcile writes the slice if it is missing or differs from the state.
func (p *Publisher) Reconcile(ctx context.Context) error {
	sn := p.State.Snapshot()
	devs, err := dra.Devices(sn.GPUs, sn.Settings)
	if err != nil {
		return fmt.Errorf("node %s: %w", p.Node, err)
	}
	api := p.Client.ResourceV1().ResourceSlices()
	name := SliceName(p.Node)
	cur, err := api.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		s := &resourcev1.ResourceSlice{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: resourcev1.ResourceSliceSpec{Driver: dra.Driver, NodeName: &p.Node, Devices: devs,
				Pool: resourcev1.ResourcePool{Name: p.Node, Generation: 1, ResourceSliceCount: 1}},
		}
		// Owned by the Node, so a deleted node takes its slice along.
		if node, err := p.Client.CoreV1().Nodes().Get(ctx, p.Node, metav1.GetOptions{}); err == nil {
			s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
		}
		if _, err := api.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create ResourceSlice %s: %w", name, err)
		}
		p.Log.Info("published ResourceSlice", zap.String("slice", name), zap.Int("devices", len(devs)))
		return nil
	case err != nil:
		return fmt.Errorf("read ResourceSlice %s: %w", name, err)
	}
	keepTaintTimes(devs, cur.Spec.Devices)
	if apiequality.Semantic.DeepEqual(cur.Spec.Devices, devs) && cur.Spec.Driver == dra.Driver {
		return nil
	}
	upd := cur.DeepCopy()
	upd.Spec.Devices = devs
	upd.Spec.Driver = dra.Driver
	upd.Spec.NodeName = &p.Node
	// A new generation tells the scheduler to drop the old one's devices.
	upd.Spec.Pool = resourcev1.ResourcePool{Name: p.Node, Generation: cur.Spec.Pool.Generation + 1, ResourceSliceCount: 1}
	if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update ResourceSlice %s: %w", name, err)
	}
	p.Log.Info("updated ResourceSlice", zap.String("slice", name), zap.Int64("generation", upd.Spec.Pool.Generation))
	return nil
}

// keepTaintTimes copies the time the API server stamped on a taint that is
// still wanted, so an unchanged taint does not look like a change.
func keepTaintTimes(want, have []resourcev1.Device) {
	old := map[string][]resourcev1.DeviceTaint{}
	for _, d := range have {
		old[d.Name] = d.Taints
	}
	for i := range want {
		for j := range want[i].Taints {
			for _, o := range old[want[i].Name] {
				if o.Key == want[i].Taints[j].Key && o.Effect == want[i].Taints[j].Effect {
					want[i].Taints[j].TimeAdded = o.TimeAdded
				}
			}
		}
	}
}

// DeleteSlices removes this node's slices of vgpu's driver: the device
// plugin path runs it at start, so a node switched back from DRA mode does
// not offer its GPUs to both paths.
func DeleteSlices(ctx context.Context, c kubernetes.Interface, node string) (int, error) {
	list, err := c.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{
		FieldSelector: fields.AndSelectors(fields.OneTermEqualSelector(resourcev1.ResourceSliceSelectorNodeName, node),
			fields.OneTermEqualSelector(resourcev1.ResourceSliceSelectorDriver, dra.Driver)).String(),
	})
	if err != nil {
		return 0, fmt.Errorf("list ResourceSlices of node %s: %w", node, err)
	}
	n := 0
	for _, s := range list.Items {
		// Field selectors are advisory for some clients; check again.
		if s.Spec.Driver != dra.Driver || s.Spec.NodeName == nil || *s.Spec.NodeName != node {
			continue
		}
		if err := c.ResourceV1().ResourceSlices().Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return n, fmt.Errorf("delete ResourceSlice %s: %w", s.Name, err)
		}
		n++
	}
	return n, nil
}

// RetireDevicePlugin removes what the device plugin path published on the
// Node: the inventory the extender places by and, where the plugin wrote
// it itself (kwok nodes), the nvidia.com/gpu capacity kube-scheduler fits by.
func RetireDevicePlugin(ctx context.Context, c kubernetes.Interface, node string, capacity bool) error {
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{contract.AnnotationDevices: nil}}})
	if _, err := c.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("node %s: remove %s: %w", node, contract.AnnotationDevices, err)
	}
	if !capacity {
		return nil
	}
	body, _ = json.Marshal(map[string]any{"status": map[string]any{
		"capacity":    map[string]any{contract.ResourceGPU: nil},
		"allocatable": map[string]any{contract.ResourceGPU: nil},
	}})
	if _, err := c.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, body, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("node %s: remove %s capacity: %w", node, contract.ResourceGPU, err)
	}
	return nil
}
