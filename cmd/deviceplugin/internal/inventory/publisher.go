// Package inventory publishes the node's GPUs on its Node object as the
// vgpu.io/devices annotation the scheduler extender reads. It writes when
// the inventory changes or when the Node stops showing what was written,
// never on a timer.
package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/metrics"
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

	// written is the last value this publisher wrote; confirmed turns true
	// once the informer shows it, so a stale cache does not trigger a
	// second write of the same value.
	written   string
	confirmed bool
}

// Run reconciles on every state change and every kick (Node updates from
// the informer) until ctx ends; a failed write is retried with backoff.
func (p *Publisher) Run(ctx context.Context, kick <-chan struct{}) {
	changed, cancel := p.State.Subscribe()
	defer cancel()
	backoff := time.Second
	var retry <-chan time.Time
	for {
		if err := p.reconcile(ctx); err != nil {
			p.Metrics.InventoryWrites.WithLabelValues("error").Inc()
			p.Log.Warn("publishing the node inventory failed; retrying", zap.String("node", p.Node), zap.Duration("in", backoff), zap.Error(err))
			retry = time.After(backoff)
			backoff = min(2*backoff, time.Minute)
		} else {
			retry = nil
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-kick:
		case <-retry:
		}
	}
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
		body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{contract.AnnotationDevices: desired}}})
		if _, err := p.Client.CoreV1().Nodes().Patch(ctx, p.Node, types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("node %s: write %s: %w", p.Node, contract.AnnotationDevices, err)
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
	body, _ := json.Marshal(map[string]any{"status": map[string]any{
		"capacity":    map[string]string{contract.ResourceGPU: strconv.FormatInt(total, 10)},
		"allocatable": map[string]string{contract.ResourceGPU: strconv.FormatInt(healthy, 10)},
	}})
	if _, err := p.Client.CoreV1().Nodes().Patch(ctx, p.Node, types.MergePatchType, body, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("node %s: write %s capacity: %w", p.Node, contract.ResourceGPU, err)
	}
	p.Log.Info("advertised capacity in node status", zap.String("node", p.Node), zap.Int64("capacity", total), zap.Int64("allocatable", healthy))
	return nil
}
