// Package settingswatch follows the vgpu-settings ConfigMap
// (docs/settings.md) for every component that needs the cluster settings,
// so that a change applies at once, without a restart, and means the same
// in each: an invalid ConfigMap keeps the settings in force (a typo must not
// silently reset the cluster to the defaults, nor stop scheduling or shrink
// a node's devices), a deleted one brings back the defaults.
package settingswatch

import (
	"sync/atomic"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/lib/settings"
)

// Watcher holds the settings in force.
type Watcher struct {
	log       *zap.Logger
	configMap string
	current   atomic.Pointer[settings.Settings]
	onChange  func(settings.Settings)
	factory   informers.SharedInformerFactory
	synced    cache.InformerSynced
}

// New returns a watcher of the ConfigMap namespace/name, holding the
// defaults until it is read. onChange, when set, is called with the new
// settings after each change, from the informer's goroutine. Nothing runs
// until Start.
func New(cs kubernetes.Interface, namespace, name string, log *zap.Logger, onChange func(settings.Settings)) (*Watcher, error) {
	w := &Watcher{log: log, configMap: namespace + "/" + name, onChange: onChange}
	d := settings.Default()
	w.current.Store(&d)
	// Scoped to the one object: the component reads no other ConfigMap.
	w.factory = informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := w.factory.Core().V1().ConfigMaps().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.apply,
		UpdateFunc: func(_, obj any) { w.apply(obj) },
		DeleteFunc: func(any) {
			w.log.Warn("settings ConfigMap deleted; using the defaults", zap.String("configMap", w.configMap))
			w.set(settings.Default())
		},
	}); err != nil {
		return nil, err
	}
	w.synced = inf.HasSynced
	return w, nil
}

// Start starts the informer until stop closes; Shutdown waits for it.
func (w *Watcher) Start(stop <-chan struct{}) { w.factory.Start(stop) }

// Shutdown waits for the informer to end after stop closed.
func (w *Watcher) Shutdown() { w.factory.Shutdown() }

// Get returns the settings in force.
func (w *Watcher) Get() settings.Settings { return *w.current.Load() }

// HasSynced reports whether the ConfigMap (or its absence) has been seen.
func (w *Watcher) HasSynced() bool { return w.synced() }

func (w *Watcher) apply(obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	s, err := settings.FromData(cm.Data)
	if err != nil {
		w.log.Error("settings ConfigMap is invalid; keeping the settings in force",
			zap.String("configMap", w.configMap), zap.Error(err), zap.Any("inForce", w.Get()))
		return
	}
	w.set(s)
}

func (w *Watcher) set(s settings.Settings) {
	old := w.current.Swap(&s)
	if *old == s {
		return
	}
	w.log.Info("settings in force", zap.String("configMap", w.configMap), zap.Any("settings", s))
	if w.onChange != nil {
		w.onChange(s)
	}
}
