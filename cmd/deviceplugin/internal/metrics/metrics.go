// Package metrics holds the device plugin's own Prometheus metrics.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics are registered on one registry; tests use a fresh one each.
type Metrics struct {
	Registered        prometheus.Gauge
	Registrations     *prometheus.CounterVec
	AdvertisedDevices *prometheus.GaugeVec
	UnhealthyGPUs     prometheus.Gauge
	Allocations       *prometheus.CounterVec
	AllocateSeconds   prometheus.Histogram
	InventoryWrites   *prometheus.CounterVec
	LibvgpuReinstalls prometheus.Counter
}

// New creates and registers the metrics.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Registered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vgpu_deviceplugin_registered",
			Help: "1 while the plugin is registered with the kubelet.",
		}),
		Registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vgpu_deviceplugin_registrations_total",
			Help: "Registration attempts with the kubelet, by result (ok, rejected, unreachable).",
		}, []string{"result"}),
		AdvertisedDevices: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vgpu_deviceplugin_advertised_devices",
			Help: "vGPU device ids last sent to the kubelet, by health.",
		}, []string{"health"}),
		UnhealthyGPUs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vgpu_deviceplugin_unhealthy_gpus",
			Help: "Physical GPUs marked unhealthy by NVML events.",
		}),
		Allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vgpu_deviceplugin_allocations_total",
			Help: "Container allocations answered, by result (ok, error).",
		}, []string{"result"}),
		AllocateSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vgpu_deviceplugin_allocate_duration_seconds",
			Help:    "Time to answer one container's Allocate, including recording it on the pod.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
		}),
		InventoryWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vgpu_deviceplugin_inventory_writes_total",
			Help: "Writes of the vgpu.io/devices annotation on the Node, by result (ok, error).",
		}, []string{"result"}),
		LibvgpuReinstalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vgpu_deviceplugin_libvgpu_reinstalls_total",
			Help: "Times Allocate found a file of the installed libvgpu gone from the host and installed it again.",
		}),
	}
	reg.MustRegister(m.LibvgpuReinstalls, m.Registered, m.Registrations, m.AdvertisedDevices, m.UnhealthyGPUs,
		m.Allocations, m.AllocateSeconds, m.InventoryWrites)
	return m
}
