package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	schedv1 "k8s.io/kube-scheduler/config/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

// vgpu: kube-scheduler with vgpu's extender (its own scheduler
// configuration, cmd/extender/config/scheduler-config.yaml) placing
// fractional pods on nodes that advertise 10 vGPUs per GPU.
func init() {
	var ext *daemons.Extender
	register(mode{
		name: "vgpu",
		node: gpunode.Spec{Model: gpunode.A100_80GB, SplitCount: 10},
		setup: func(ctx context.Context, c *cluster.Cluster) (*schedv1.KubeSchedulerConfiguration, error) {
			if err := daemons.SetSettings(ctx, c, settings.Default()); err != nil {
				return nil, err
			}
			var err error
			if ext, err = daemons.StartExtender(ctx, c, "--log-level=warn", "--profiling"); err != nil {
				return nil, err
			}
			cfg, err := daemons.SchedulerConfig(ext.URL)
			if err != nil {
				return nil, err
			}
			// Both modes run with the same client limits: kube-scheduler's
			// defaults unless --scheduler-qps sets them for every mode.
			cfg.ClientConnection.QPS, cfg.ClientConnection.Burst = 0, 0
			return cfg, nil
		},
		pod:   vgpuPod,
		pprof: func() map[string]string { return map[string]string{"vgpu-extender": ext.HealthURL} },
		stats: func(ctx context.Context) (string, error) {
			lat, err := ext.Latency(ctx)
			if err != nil {
				return "", err
			}
			var parts []string
			for _, verb := range []string{"filter", "prioritize", "bind"} {
				q := lat[verb]
				parts = append(parts, fmt.Sprintf("%s p50 %s p99 %s (n=%d)", verb, ms(q.P50), ms(q.P99), q.Count))
			}
			text, err := ext.Metrics(ctx)
			if err != nil {
				return "", err
			}
			var binds []string
			for _, line := range strings.Split(text, "\n") {
				if rest, ok := strings.CutPrefix(line, "vgpu_extender_binds_total{result=\""); ok {
					binds = append(binds, strings.Replace(rest, "\"} ", "=", 1))
				}
			}
			return "extender " + strings.Join(parts, ", ") + "; binds " + strings.Join(binds, " "), nil
		},
	})
}

// vgpuPod asks for a share of one GPU: a tenth to a half of its memory
// (as MiB or as a percentage) and of its cores, like the fractional tasks
// of the openb trace. No webhook runs in the benchmark, so the pod names
// vgpu's scheduler and nvidia.com/gpu itself.
func vgpuPod(i int) *corev1.Pod {
	limits := corev1.ResourceList{
		contract.ResourceGPU:   resource.MustParse("1"),
		contract.ResourceCores: *resource.NewQuantity(int64(10+(i*7)%41), resource.DecimalSI),
	}
	if i%2 == 0 {
		limits[contract.ResourceMemory] = *resource.NewQuantity(int64(8192+(i*997)%32768), resource.DecimalSI)
	} else {
		limits[contract.ResourceMemoryPercentage] = *resource.NewQuantity(int64(10+(i*13)%41), resource.DecimalSI)
	}
	p := benchPod(i, limits)
	p.Spec.SchedulerName = contract.DefaultSchedulerName
	return p
}

func ms(seconds float64) string { return fmt.Sprintf("%.2fms", seconds*1000) }

// shares: the vgpu workload (same nodes, same fractional pods) on the stock
// kube-scheduler without the extender, NodeResourcesFit told to ignore the
// share resources. Nothing accounts for GPU memory or cores here, so it is
// no way to run: it measures what kube-scheduler alone costs for pods that
// name three extended resources, the floor under the vgpu mode.
func init() {
	register(mode{
		name: "shares",
		node: gpunode.Spec{Model: gpunode.A100_80GB, SplitCount: 10},
		setup: func(context.Context, *cluster.Cluster) (*schedv1.KubeSchedulerConfiguration, error) {
			args, err := json.Marshal(schedv1.NodeResourcesFitArgs{
				TypeMeta:         metav1.TypeMeta{APIVersion: schedv1.SchemeGroupVersion.String(), Kind: "NodeResourcesFitArgs"},
				IgnoredResources: []string{contract.ResourceMemory, contract.ResourceMemoryPercentage, contract.ResourceCores},
			})
			if err != nil {
				return nil, err
			}
			return &schedv1.KubeSchedulerConfiguration{Profiles: []schedv1.KubeSchedulerProfile{{
				PluginConfig: []schedv1.PluginConfig{{Name: "NodeResourcesFit", Args: runtime.RawExtension{Raw: args}}},
			}}}, nil
		},
		pod: func(i int) *corev1.Pod {
			p := vgpuPod(i)
			p.Spec.SchedulerName = corev1.DefaultSchedulerName
			return p
		},
	})
}
