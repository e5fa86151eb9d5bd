// Package metrics defines the extender's Prometheus metrics: latency of
// each verb, failed fits by reason, binds by result, requeue nudges, and
// what the ledger says each node has allocated.
package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vgpu-io/vgpu/lib/ledger"
)

// Verbs of the extender, the label of the latency histogram.
const (
	VerbFilter     = "filter"
	VerbPrioritize = "prioritize"
	VerbBind       = "bind"
)

// Metrics are registered once per extender.
type Metrics struct {
	Latency    *prometheus.HistogramVec
	FailedFits *prometheus.CounterVec
	Binds      *prometheus.CounterVec
	Nudges     prometheus.Counter
}

// New registers the metrics, and a collector of per-node allocation read
// from l at scrape time (nothing is kept up to date on the hot path).
func New(reg prometheus.Registerer, l *ledger.Ledger) *Metrics {
	m := &Metrics{
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vgpu_extender_request_duration_seconds",
			Help: "Time to answer kube-scheduler, by verb (filter, prioritize, bind).",
			// 50µs to ~10s in steps of 1.5x: fine enough for p50/p99 of
			// sub-millisecond filters and of binds that wait on the API.
			Buckets: prometheus.ExponentialBuckets(50e-6, 1.5, 31),
		}, []string{"verb"}),
		FailedFits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vgpu_extender_failed_fits_total",
			Help: "Nodes a pod did not fit at filter, by reason (a node may count under several).",
		}, []string{"reason"}),
		Binds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vgpu_extender_binds_total",
			Help: "Bind requests by result: bound, already (a retry of a bind that had succeeded), lost_race (another bind took the GPUs), error.",
		}, []string{"result"}),
		Nudges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vgpu_extender_requeue_nudges_total",
			Help: "Pending pods, rejected for lack of GPU capacity, touched to make kube-scheduler retry them after capacity was freed.",
		}),
	}
	reg.MustRegister(m.Latency, m.FailedFits, m.Binds, m.Nudges, &allocation{l: l})
	return m
}

// Reasons of failed fits, from lib/placement's explanations.
const (
	ReasonNoInventory = "no_inventory"
	ReasonNoGPUs      = "no_gpus"
	ReasonUnhealthy   = "unhealthy"
	ReasonSelector    = "selector"
	ReasonHeldWhole   = "held_whole"
	ReasonNeedsWhole  = "needs_whole"
	ReasonSlots       = "slots"
	ReasonMemory      = "memory"
	ReasonCores       = "cores"
	ReasonOther       = "other"
	// ReasonInvalid: the pod's request itself is invalid (it got past the
	// webhook); it fits no node.
	ReasonInvalid = "invalid_request"
)

// reasonPhrases map the phrases of lib/placement's reasons to labels. The
// tests run real fits for each, so a rewording there fails here.
var reasonPhrases = []struct{ phrase, label string }{
	{"publishes no vGPU inventory", ReasonNoInventory},
	{"the node has no GPUs", ReasonNoGPUs},
	{"are unhealthy", ReasonUnhealthy},
	{"excluded by the pod's", ReasonSelector},
	{"held whole by another pod", ReasonHeldWhole},
	{"the container needs whole GPUs", ReasonNeedsWhole},
	{"no free vGPU slot", ReasonSlots},
	{"insufficient GPU memory", ReasonMemory},
	{"insufficient GPU cores", ReasonCores},
}

// phrases are the short forms of the labels that kube-scheduler shows:
// it counts nodes per distinct reason ("0/1000 nodes are available: 600
// vgpu: insufficient GPU memory, ..."), which per-node counts would defeat,
// and an event message over 1,024 bytes is dropped.
var phrases = map[string]string{
	ReasonNoInventory: "node publishes no vGPU inventory (vgpu.io/devices)",
	ReasonNoGPUs:      "node has no GPUs",
	ReasonUnhealthy:   "GPUs unhealthy",
	ReasonSelector:    "GPUs excluded by the pod's gputype/gpuuuid annotations",
	ReasonHeldWhole:   "GPUs held whole by other pods",
	ReasonNeedsWhole:  "GPUs in use while the pod needs whole GPUs",
	ReasonSlots:       "no free vGPU slot",
	ReasonMemory:      "insufficient GPU memory",
	ReasonCores:       "insufficient GPU cores",
	ReasonOther:       "too few GPUs",
}

// Short is the explanation kube-scheduler reports for a node: the phrases
// of its labels, prefixed with "vgpu: ".
func Short(labels []string) string {
	parts := make([]string, len(labels))
	for i, l := range labels {
		parts[i] = phrases[l]
	}
	return "vgpu: " + strings.Join(parts, ", ")
}

// Reasons labels one failure explanation; it has at least one label.
func Reasons(explanation string) []string {
	var out []string
	for _, p := range reasonPhrases {
		if strings.Contains(explanation, p.phrase) {
			out = append(out, p.label)
		}
	}
	if len(out) == 0 {
		out = append(out, ReasonOther)
	}
	return out
}

// Capacity reports whether the reason is a lack of capacity that a pod
// leaving could cure, as opposed to a node that never fits.
func Capacity(label string) bool {
	switch label {
	case ReasonHeldWhole, ReasonNeedsWhole, ReasonSlots, ReasonMemory, ReasonCores:
		return true
	}
	return false
}

// allocation exports the ledger's books per node.
type allocation struct{ l *ledger.Ledger }

var (
	descMemory = prometheus.NewDesc("vgpu_extender_node_allocated_memory_mib",
		"GPU memory booked on the node, MiB, summed over its GPUs.", []string{"node"}, nil)
	descCores = prometheus.NewDesc("vgpu_extender_node_allocated_cores_percent",
		"GPU cores booked on the node, in percent of one GPU, summed over its GPUs.", []string{"node"}, nil)
	descSlots = prometheus.NewDesc("vgpu_extender_node_allocated_slots",
		"vGPU slots booked on the node, summed over its GPUs.", []string{"node"}, nil)
	descMemoryCap = prometheus.NewDesc("vgpu_extender_node_memory_capacity_mib",
		"GPU memory the node may hand out (memory x scaling), MiB, summed over its GPUs.", []string{"node"}, nil)
	descSlotsCap = prometheus.NewDesc("vgpu_extender_node_slots_capacity",
		"vGPU slots of the node's healthy GPUs (split count x GPUs).", []string{"node"}, nil)
)

func (a *allocation) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMemory, descCores, descSlots, descMemoryCap, descSlotsCap} {
		ch <- d
	}
}

func (a *allocation) Collect(ch chan<- prometheus.Metric) {
	for _, name := range a.l.NodeNames() {
		n := a.l.Node(name)
		if n == nil {
			continue
		}
		var mem, memCap int64
		var cores, slots, slotsCap int
		n.View(func(v ledger.View) {
			for i, g := range v.GPUs {
				u := v.Used[i]
				mem += u.MemoryMiB
				cores += u.Cores
				slots += u.Slots
				memCap += ledger.MemoryCapacity(g.MemoryMiB, v.MemoryScaling)
				if g.Healthy {
					slotsCap += v.SplitCount
				}
			}
		})
		ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(mem), name)
		ch <- prometheus.MustNewConstMetric(descCores, prometheus.GaugeValue, float64(cores), name)
		ch <- prometheus.MustNewConstMetric(descSlots, prometheus.GaugeValue, float64(slots), name)
		ch <- prometheus.MustNewConstMetric(descMemoryCap, prometheus.GaugeValue, float64(memCap), name)
		ch <- prometheus.MustNewConstMetric(descSlotsCap, prometheus.GaugeValue, float64(slotsCap), name)
	}
}
