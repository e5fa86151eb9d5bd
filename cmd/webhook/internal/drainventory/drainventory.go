// Package drainventory gives the webhook, in DRA mode, what it needs from
// the cluster: the GPU models and the largest GPU, read from the
// ResourceSlices of vgpu's driver, and a way to create the
// ResourceClaimTemplates pods refer to (docs/dra.md).
package drainventory

import (
	"context"
	"sync"

	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/lib/dra"
)

// Slices follows the slices of vgpu's driver.
type Slices struct {
	synced cache.InformerSynced
	store  cache.Store

	mu      sync.RWMutex
	models  []dra.Model
	largest int64
}

// New registers a ResourceSlice informer; start the factory to fill it.
func New(cs kubernetes.Interface) (*Slices, informers.SharedInformerFactory, error) {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector(resourcev1.ResourceSliceSelectorDriver, dra.Driver).String()
	}))
	inf := f.Resource().V1().ResourceSlices().Informer()
	s := &Slices{synced: inf.HasSynced, store: inf.GetStore()}
	refresh := func(any) { s.refresh() }
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: refresh, UpdateFunc: func(_, n any) { refresh(n) }, DeleteFunc: refresh,
	}); err != nil {
		return nil, nil, err
	}
	return s, f, nil
}

func (s *Slices) refresh() {
	var list []*resourcev1.ResourceSlice
	for _, o := range s.store.List() {
		if sl, ok := o.(*resourcev1.ResourceSlice); ok {
			list = append(list, sl)
		}
	}
	models, largest := dra.ModelsOf(list)
	s.mu.Lock()
	s.models, s.largest = models, largest
	s.mu.Unlock()
}

// HasSynced reports whether the first list has arrived.
func (s *Slices) HasSynced() bool { return s.synced() }

// Models lists the distinct GPU models (name and memory) published.
func (s *Slices) Models() []dra.Model {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.models
}

// LargestGPU is the largest memory capacity any device offers.
func (s *Slices) LargestGPU() (int64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.largest, s.largest > 0
}

// Templates creates ResourceClaimTemplates through the API server.
type Templates struct {
	Client kubernetes.Interface
}

// Ensure creates the template unless it exists: its name is a hash of its
// spec, so an existing one is the same.
func (t Templates) Ensure(ctx context.Context, namespace, name string, spec resourcev1.ResourceClaimSpec) error {
	_, err := t.Client.ResourceV1().ResourceClaimTemplates(namespace).Create(ctx, &resourcev1.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "vgpu-webhook"}},
		Spec: resourcev1.ResourceClaimTemplateSpec{Spec: spec},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
