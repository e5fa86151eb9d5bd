// Package settings follows the vgpu-settings ConfigMap and applies the
// settings that concern the node (split count, memory scaling) to the GPU
// state, so a change is advertised without a restart.
package settings

import (
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// Handler returns informer callbacks for the settings ConfigMap (the
// informer is scoped to that one object). An invalid ConfigMap keeps the
// settings in force: shrinking a node's advertised devices because of a typo
// would evict nothing but block every new pod.
func Handler(state *gpustate.State, log *zap.Logger) cache.ResourceEventHandlerFuncs {
	apply := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return
		}
		s, err := settings.FromData(cm.Data)
		if err != nil {
			log.Error("invalid settings ConfigMap; keeping the settings in force",
				zap.String("configMap", cm.Namespace+"/"+cm.Name), zap.Error(err))
			return
		}
		if state.SetSettings(s) {
			log.Info("settings changed", zap.Int("deviceSplitCount", s.DeviceSplitCount), zap.Float64("deviceMemoryScaling", s.DeviceMemoryScaling))
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
		DeleteFunc: func(any) {
			if state.SetSettings(settings.Default()) {
				log.Info("settings ConfigMap deleted; using the defaults")
			}
		},
	}
}
