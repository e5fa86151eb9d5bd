// Package settings follows the vgpu-settings ConfigMap (docs/settings.md)
// for the one setting the monitor acts on, unenforcedAction, so that an
// operator's change applies at the next audit pass, without a restart.
package settings

import (
	"context"
	"sync/atomic"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/lib/config"
)

// Watcher holds the action in force; until the ConfigMap is seen, and when
// it is deleted, the default (report).
type Watcher struct {
	log     *zap.Logger
	action  atomic.Value // config.UnenforcedAction
	factory informers.SharedInformerFactory
}

// New prepares the watcher of ConfigMap namespace/name; Start runs it.
func New(client kubernetes.Interface, namespace, name string, log *zap.Logger) (*Watcher, error) {
	w := &Watcher{log: log}
	w.action.Store(config.Default().UnenforcedAction)
	w.factory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	_, err := w.factory.Core().V1().ConfigMaps().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.apply,
		UpdateFunc: func(_, obj any) { w.apply(obj) },
		DeleteFunc: func(any) { w.set(config.Default().UnenforcedAction) },
	})
	return w, err
}

// Start runs the informer until ctx ends.
func (w *Watcher) Start(ctx context.Context) { w.factory.Start(ctx.Done()) }

// Action returns the action in force.
func (w *Watcher) Action() config.UnenforcedAction { return w.action.Load().(config.UnenforcedAction) }

func (w *Watcher) apply(obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	s, err := config.FromData(cm.Data)
	if err != nil {
		// A typo must neither start evicting nor silently stop it.
		w.log.Error("invalid settings ConfigMap; keeping the settings in force",
			zap.String("configMap", cm.Namespace+"/"+cm.Name), zap.Error(err), zap.String("unenforcedAction", string(w.Action())))
		return
	}
	w.set(s.UnenforcedAction)
}

func (w *Watcher) set(a config.UnenforcedAction) {
	if old := w.action.Swap(a); old != a {
		w.log.Info("settings in force", zap.String("unenforcedAction", string(a)))
	}
}
