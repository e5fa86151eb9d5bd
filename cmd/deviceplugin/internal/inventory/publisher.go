// Package inventory publishes the node's GPUs on its Node object as the
// vgpu.io/devices annotation the scheduler extender reads. It writes when
// the inventory changes or when the Node stops showing what was written,
// never on a timer.
package inventory

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/metrics"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/reconcile"
	"github.com/vgpu-io/vgpu/internal/patch"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
)

// Publisher keeps one Node's vgpu.io/devices annotation up to date.
type Publisher struct {
	Node    string
	Client  kubernetes.Interface
	Nodes   corelisters.NodeLister
	State   *gpustate.State
	Metrics *metrics.Metrics
	Log     *zap.Logger
	// AdvertiseCapacity also writes nvidia.com/gpu capacity and allocatable
	// into the Node's status, for nodes without a kubelet (kwok) where no
	// kubelet turns the device list into those numbers.
	AdvertiseCapacity bool
	// RetryBase is the first delay after a failed write; 0 means a second.
	RetryBase time.Duration

	// written is the last value this publisher wrote; confirmed turns true
	// once the informer shows it, so a stale cache does not trigger a
	// second write of the same value.
	written   string
	confirmed bool
}

// Run reconciles on every state change and every kick (Node updates from
// the informer) until ctx ends. A failed write is retried with client-go's
// per-item exponential backoff (RetryBase doubling up to a minute); events
// that arrive meanwhile coalesce into one reconcile.
func (p *Publisher) Run(ctx context.Context, kick <-chan struct{}) {
	reconcile.Loop(ctx, "inventory", p.State, kick, p.RetryBase, p.reconcile, func(err error, in time.Duration) {
		p.Metrics.InventoryWrites.WithLabelValues("error").Inc()
		p.Log.Warn("publishing the node inventory failed; retrying", zap.String("node", p.Node), zap.Duration("retryIn", in), zap.Error(err))
	})
}

func (p *Publisher) reconcile(ctx context.Context) error {
	sn := p.State.Snapshot()
	desired, err := annotation.EncodeDevices(sn.Inventory())
	if err != nil {
		return err
	}
	node, err := p.Nodes.Get(p.Node)
	if err != nil {
		// Not in the cache yet (or no such Node): read it directly.
		node, err = p.Client.CoreV1().Nodes().Get(ctx, p.Node, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("node %s: %w", p.Node, err)
		}
	}
	observed := node.Annotations[contract.AnnotationDevices]
	if observed == desired {
		p.written, p.confirmed = desired, true
	} else if desired != p.written || p.confirmed {
		if err := patch.NodeAnnotations(ctx, p.Client, p.Node, map[string]string{contract.AnnotationDevices: desired}); err != nil {
			return err
		}
		p.written, p.confirmed = desired, false
		inv := sn.Inventory()
		p.Metrics.InventoryWrites.WithLabelValues("ok").Inc()
		p.Log.Info("published node inventory", zap.String("node", p.Node), zap.Int("gpus", len(sn.GPUs)),
			zap.Int("healthy", inv.HealthyCount()), zap.Int("deviceSplitCount", sn.Settings.DeviceSplitCount),
			zap.Float64("memoryScaling", sn.Settings.DeviceMemoryScaling))
	}
	if p.AdvertiseCapacity {
		return p.capacity(ctx, node, sn)
	}
	return nil
}

func (p *Publisher) capacity(ctx context.Context, node *corev1.Node, sn gpustate.Snapshot) error {
	inv := sn.Inventory()
	total := int64(len(inv.GPUs) * inv.SplitCount)
	healthy := int64(inv.HealthyCount() * inv.SplitCount)
	name := corev1.ResourceName(contract.ResourceGPU)
	c, a := node.Status.Capacity[name], node.Status.Allocatable[name]
	if c.Value() == total && a.Value() == healthy && !c.IsZero() {
		return nil
	}
	if err := patch.NodeResources(ctx, p.Client, p.Node, corev1.ResourceList{name: *resource.NewQuantity(total, resource.DecimalSI)},
		corev1.ResourceList{name: *resource.NewQuantity(healthy, resource.DecimalSI)}); err != nil {
		return err
	}
	p.Log.Info("advertised capacity in node status", zap.String("node", p.Node), zap.Int64("capacity", total), zap.Int64("allocatable", healthy))
	return nil
}
