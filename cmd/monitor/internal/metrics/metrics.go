// Package metrics is the monitor's Prometheus collector. Everything is read
// at scrape time from the sources (NVML, the pod cache, the region files), so
// a scrape shows the node as it is and no background loop can go stale.
package metrics

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/audit"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/pods"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/usage"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/ledger"
)

// Prefix starts every metric name.
const Prefix = "vgpu_"

const mib = 1 << 20

// GPUReader reads the node's GPUs.
type GPUReader interface {
	Read() ([]gpus.GPU, error)
}

// PodSource is the monitor's view of the API server.
type PodSource interface {
	Lookup(uid string) (pods.Ref, bool)
	Assignments() []pods.Assigned
	Inventory() (device.Inventory, bool)
}

// Findings are the containers the monitor's audit found unenforced.
type Findings interface {
	Unenforced() []audit.Finding
	Blind() bool
}

// Collector gathers every vgpu metric of one node.
type Collector struct {
	GPUs       GPUReader
	Pods       PodSource
	Procs      usage.OwnerResolver
	RegionsDir string
	// Claims locates the regions of prepared DRA claims (DRA path).
	Claims  regions.Claims
	Regions *regions.Reader
	// Audit may be nil: then only libvgpu's own verdict is exported.
	Audit Findings
	Log   *zap.Logger

	mu        sync.Mutex
	nvmlError string // last NVML error logged, to log each new one once
}

var (
	gpuLabels = []string{"gpu", "index", "model"}
	ctrLabels = []string{"namespace", "pod", "container", "gpu", "index"}

	gpuMemUsed   = desc("gpu_memory_used_bytes", "GPU memory in use on the GPU, all processes, as NVML reports it.", gpuLabels)
	gpuMemTotal  = desc("gpu_memory_total_bytes", "GPU memory of the GPU, as NVML reports it.", gpuLabels)
	gpuUtil      = desc("gpu_utilization_percent", "Percent of time over the last sample period a kernel ran on the GPU (NVML).", gpuLabels)
	gpuSlotsUsed = desc("gpu_slots_allocated", "vGPUs assigned on the GPU to pods of this node (vgpu.io/assignment).", gpuLabels)
	gpuSlots     = desc("gpu_slots_total", "Most vGPUs the GPU may be shared by (splitCount of the node's vgpu.io/devices).", gpuLabels)
	gpuMemAlloc  = desc("gpu_memory_allocated_bytes", "GPU memory assigned on the GPU to pods of this node.", gpuLabels)
	gpuCoreAlloc = desc("gpu_cores_allocated_percent", "Compute share (percent of SMs) assigned on the GPU to pods of this node.", gpuLabels)

	ctrMemLimit  = desc("container_memory_limit_bytes", "GPU memory limit of the container on the GPU, from its shared region.", ctrLabels)
	ctrMemUsed   = desc("container_memory_used_bytes", "GPU memory the container holds on the GPU, as libvgpu counted it.", ctrLabels)
	ctrCoreLimit = desc("container_cores_limit_percent", "Compute share limit of the container on the GPU; 0 means no limit.", ctrLabels)
	ctrUtil      = desc("container_utilization_percent", "SM utilisation of the container's processes on the GPU (NVML per-process samples).", ctrLabels)
	ctrEnforced  = desc("container_enforced", "1 when the container's limits are enforced; 0 when libvgpu reported that it cannot or the monitor found GPU memory libvgpu does not account for.", ctrLabels)

	ctrUnenforced = desc("container_unenforced_info", "1 for each container and reason its limits are not enforced, with libvgpu's or the monitor's message.",
		[]string{"namespace", "pod", "container", "reason", "message"})

	regionsDesc = desc("monitor_regions", "Region directories found on the node, by state: ok, absent (no file yet), corrupt, orphaned (pod not known).", []string{"state"})
	nvmlUp      = desc("monitor_nvml_up", "1 when the last NVML read succeeded for every GPU.", nil)
	procVisible = desc("monitor_processes_visible", "0 when containers hold GPU memory on a GPU where NVML lists none of their processes: the audit cannot see pods' processes (run the monitor with hostPID).", nil)
)

func desc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc(Prefix+name, help, labels, nil)
}

// Describe sends every descriptor.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{gpuMemUsed, gpuMemTotal, gpuUtil, gpuSlotsUsed, gpuSlots, gpuMemAlloc, gpuCoreAlloc,
		ctrMemLimit, ctrMemUsed, ctrCoreLimit, ctrUtil, ctrEnforced, ctrUnenforced, regionsDesc, nvmlUp, procVisible} {
		ch <- d
	}
}

// Collect reads the sources and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gs, err := c.GPUs.Read()
	c.noteNVML(err)
	ch <- prometheus.MustNewConstMetric(nvmlUp, prometheus.GaugeValue, boolValue(err == nil))
	if c.Audit != nil {
		ch <- prometheus.MustNewConstMetric(procVisible, prometheus.GaugeValue, boolValue(!c.Audit.Blind()))
	}

	index := make(map[string]gpus.GPU, len(gs))
	for _, g := range gs {
		index[g.UUID] = g
	}
	c.collectGPUs(ch, gs)
	c.collectContainers(ch, gs, index)
}

func (c *Collector) noteNVML(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	c.mu.Lock()
	changed := msg != c.nvmlError
	c.nvmlError = msg
	c.mu.Unlock()
	if changed && err != nil {
		c.Log.Warn("NVML read failed; GPU metrics are incomplete", zap.Error(err))
	}
}

func (c *Collector) collectGPUs(ch chan<- prometheus.Metric, gs []gpus.GPU) {
	alloc := Allocated(c.Pods.Assignments())
	inv, hasInv := c.Pods.Inventory()
	for _, g := range gs {
		lv := []string{g.UUID, strconv.Itoa(g.Index), g.Model}
		gauge(ch, gpuMemUsed, float64(g.MemoryUsedBytes), lv)
		gauge(ch, gpuMemTotal, float64(g.MemoryTotalBytes), lv)
		if g.UtilizationPercent >= 0 {
			gauge(ch, gpuUtil, float64(g.UtilizationPercent), lv)
		}
		a := alloc[g.UUID]
		gauge(ch, gpuSlotsUsed, float64(a.Slots), lv)
		gauge(ch, gpuMemAlloc, float64(a.MemoryMiB*mib), lv)
		gauge(ch, gpuCoreAlloc, float64(a.Cores), lv)
		if hasInv {
			gauge(ch, gpuSlots, float64(inv.SplitCount), lv)
		}
	}
}

// Allocated sums, per GPU uuid, what the pods of the node hold, counted
// as the scheduler's ledger counts it.
func Allocated(as []pods.Assigned) map[string]ledger.Usage {
	out := map[string]ledger.Usage{}
	for _, a := range as {
		held := &a.Assignment
		if a.Held != nil {
			held = a.Held
		}
		for _, u := range ledger.Footprint(held) {
			t := out[u.UUID]
			t.Slots += u.Slots
			t.MemoryMiB += u.MemoryMiB
			t.Cores += u.Cores
			t.Pods++
			out[u.UUID] = t
		}
	}
	return out
}

type regionOf struct {
	entry  regions.Entry
	ref    pods.Ref
	region regions.Region
}

func (c *Collector) collectContainers(ch chan<- prometheus.Metric, gs []gpus.GPU, index map[string]gpus.GPU) {
	entries, err := regions.ListWithClaims(c.RegionsDir, c.Claims)
	if err != nil {
		c.Log.Warn("cannot list region directories", zap.String("dir", c.RegionsDir), zap.Error(err))
	}
	c.Regions.Prune(entries)
	states := map[string]int{"ok": 0, "absent": 0, "corrupt": 0, "orphaned": 0}
	var live []regionOf
	for _, e := range entries {
		ref, known := c.Pods.Lookup(e.PodUID)
		if !known {
			states["orphaned"]++
			continue
		}
		reg, st := c.Regions.Read(e)
		switch st {
		case regions.Absent:
			states["absent"]++
			continue
		case regions.Corrupt:
			states["corrupt"]++
			continue
		}
		states["ok"]++
		live = append(live, regionOf{entry: e, ref: ref, region: reg})
	}
	for _, s := range []string{"ok", "absent", "corrupt", "orphaned"} {
		gauge(ch, regionsDesc, float64(states[s]), []string{s})
	}
	cs := make([]usage.Container, len(live))
	for i, r := range live {
		cs[i] = usage.Container{PodUIDs: []string{r.entry.PodUID}, Region: r.region}
	}
	util := usage.Utilization(cs, gs, c.Procs)
	found := map[audit.Key][]audit.Finding{}
	if c.Audit != nil {
		for _, f := range c.Audit.Unenforced() {
			if !f.Libvgpu { // libvgpu's verdict is read fresh from the region below
				found[f.Key] = append(found[f.Key], f)
			}
		}
	}
	indexOf := func(uuid string) string {
		if g, ok := index[uuid]; ok {
			return strconv.Itoa(g.Index)
		}
		return ""
	}
	info := map[[5]string]bool{}
	enforced := map[[4]string]bool{} // series of vgpu_container_enforced already sent
	for i, r := range live {
		key := audit.Key{PodUID: r.entry.PodUID, Container: r.entry.Container}
		if !r.region.Enforced {
			info[[5]string{r.ref.Namespace, r.ref.Name, r.entry.Container, r.region.Reason, r.region.ReasonText}] = true
		}
		for _, d := range r.region.Devices {
			lv := []string{r.ref.Namespace, r.ref.Name, r.entry.Container, d.UUID, indexOf(d.UUID)}
			gauge(ch, ctrMemLimit, float64(d.MemoryLimitBytes), lv)
			gauge(ch, ctrMemUsed, float64(d.MemoryUsedBytes), lv)
			gauge(ch, ctrCoreLimit, float64(d.CoresLimit), lv)
			gauge(ch, ctrEnforced, boolValue(r.region.Enforced && len(found[key]) == 0), lv)
			enforced[[4]string{r.ref.Namespace, r.ref.Name, r.entry.Container, d.UUID}] = true
			if u, ok := util[i][d.UUID]; ok {
				gauge(ch, ctrUtil, float64(u), lv)
			}
		}
	}
	// What the monitor found about containers without a region, or on a GPU
	// their region does not list, still needs its enforced=0 series.
	for _, fs := range found {
		for _, f := range fs {
			info[[5]string{f.Ref.Namespace, f.Ref.Name, f.Container, f.Reason, f.Message}] = true
			k := [4]string{f.Ref.Namespace, f.Ref.Name, f.Container, f.GPU}
			if f.GPU == "" || enforced[k] {
				continue
			}
			enforced[k] = true
			gauge(ch, ctrEnforced, 0, []string{f.Ref.Namespace, f.Ref.Name, f.Container, f.GPU, indexOf(f.GPU)})
		}
	}
	for lv := range info {
		gauge(ch, ctrUnenforced, 1, lv[:])
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, lv []string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
