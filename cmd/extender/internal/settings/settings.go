// Package settings follows the vgpu-settings ConfigMap (DESIGN §2) and
// always has the settings in force: a change applies at once, no restart.
package settings

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

// Watcher holds the current settings.
type Watcher struct {
	log     *zap.Logger
	current atomic.Pointer[settings.Settings]
	synced  cache.InformerSynced
}

// New starts nothing: it returns the watcher and the informer factory
// (scoped to the one ConfigMap) that the caller starts.
func New(cs kubernetes.Interface, namespace, name string, log *zap.Logger) (*Watcher, informers.SharedInformerFactory, error) {
	w := &Watcher{log: log}
	d := settings.Default()
	w.current.Store(&d)
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := f.Core().V1().ConfigMaps().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.apply(obj) },
		UpdateFunc: func(_, obj any) { w.apply(obj) },
		DeleteFunc: func(any) {
			d := settings.Default()
			w.log.Warn("settings ConfigMap deleted; using the defaults", zap.Any("settings", d))
			w.set(d)
		},
	})
	if err != nil {
		return nil, nil, err
	}
	w.synced = inf.HasSynced
	return w, f, nil
}

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
		// A typo must not silently reset the cluster to defaults, nor stop
		// scheduling: keep what was in force and say so.
		w.log.Error("settings ConfigMap is invalid; keeping the settings in force",
			zap.String("configMap", cm.Namespace+"/"+cm.Name), zap.Error(err), zap.Any("inForce", w.Get()))
		return
	}
	w.set(s)
}

func (w *Watcher) set(s settings.Settings) {
	old := w.current.Swap(&s)
	if *old == s {
		return
	}
	w.log.Info("settings in force", zap.Any("settings", s))
}
