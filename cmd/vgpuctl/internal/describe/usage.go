package describe

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
)

// UsageStatus says where usage came from, or why it is missing.
type UsageStatus struct {
	Source string `json:"source"`
	Error  string `json:"error,omitempty"`
}

// GPUUsed is a GPU's actual usage, as the node's monitor measured it.
type GPUUsed struct {
	MemoryUsedMiB      int64 `json:"memoryUsedMiB"`
	UtilizationPercent *int  `json:"utilizationPercent,omitempty"`
}

// ContainerUsed is a container's actual usage on one GPU.
type ContainerUsed struct {
	MemoryUsedMiB      int64 `json:"memoryUsedMiB"`
	UtilizationPercent *int  `json:"utilizationPercent,omitempty"`
	Enforced           bool  `json:"enforced"`
	// Unenforced is libvgpu's reason, when it cannot enforce the limits.
	Unenforced string `json:"unenforced,omitempty"`
}

// Metric names read from the monitor (docs/metrics.md).
const (
	mGPUMemUsed   = "vgpu_gpu_memory_used_bytes"
	mGPUUtil      = "vgpu_gpu_utilization_percent"
	mCtrMemUsed   = "vgpu_container_memory_used_bytes"
	mCtrUtil      = "vgpu_container_utilization_percent"
	mCtrEnforced  = "vgpu_container_enforced"
	mCtrReason    = "vgpu_container_unenforced_info"
	mib           = 1 << 20
	defaultPort   = 9394
	metricsSuffix = "/metrics"
)

// monitorAddress picks the node's InternalIP (then any address) and port.
func monitorAddress(n *corev1.Node, port int) (string, error) {
	var pick string
	for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP, corev1.NodeHostName} {
		for _, a := range n.Status.Addresses {
			if a.Type == t && a.Address != "" && pick == "" {
				pick = a.Address
			}
		}
	}
	if pick == "" {
		return "", fmt.Errorf("node %q has no address", n.Name)
	}
	return net.JoinHostPort(pick, strconv.Itoa(port)), nil
}

// scrape fetches and parses the monitor's metrics.
func scrape(ctx context.Context, addr string, timeout time.Duration) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+metricsSuffix, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s%s: %s", addr, metricsSuffix, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func each(fams map[string]*dto.MetricFamily, name string, fn func(l map[string]string, v float64)) {
	f, ok := fams[name]
	if !ok {
		return
	}
	for _, m := range f.GetMetric() {
		fn(labels(m), m.GetGauge().GetValue())
	}
}

// applyUsage puts the monitor's measurements next to the allocation.
func applyUsage(r *NodeReport, fams map[string]*dto.MetricFamily) {
	byUUID := map[string]*GPUReport{}
	for i := range r.GPUs {
		byUUID[r.GPUs[i].UUID] = &r.GPUs[i]
	}
	each(fams, mGPUMemUsed, func(l map[string]string, v float64) {
		if g := byUUID[l["gpu"]]; g != nil {
			if g.Used == nil {
				g.Used = &GPUUsed{}
			}
			g.Used.MemoryUsedMiB = int64(v) / mib
		}
	})
	each(fams, mGPUUtil, func(l map[string]string, v float64) {
		if g := byUUID[l["gpu"]]; g != nil {
			if g.Used == nil {
				g.Used = &GPUUsed{}
			}
			u := int(v)
			g.Used.UtilizationPercent = &u
		}
	})
	share := func(l map[string]string) *PodShare {
		g := byUUID[l["gpu"]]
		if g == nil {
			return nil
		}
		for i := range g.Pods {
			p := &g.Pods[i]
			if holds(p, l) {
				if p.Used == nil {
					p.Used = &ContainerUsed{}
				}
				return p
			}
		}
		return nil
	}
	each(fams, mCtrMemUsed, func(l map[string]string, v float64) {
		if p := share(l); p != nil {
			p.Used.MemoryUsedMiB = int64(v) / mib
		}
	})
	each(fams, mCtrUtil, func(l map[string]string, v float64) {
		if p := share(l); p != nil {
			u := int(v)
			p.Used.UtilizationPercent = &u
		}
	})
	// A claim's share used by several containers (DRA path) is enforced
	// when it is in each of them.
	seen := map[*PodShare]bool{}
	each(fams, mCtrEnforced, func(l map[string]string, v float64) {
		if p := share(l); p != nil {
			p.Used.Enforced = v == 1 && (p.Used.Enforced || !seen[p])
			seen[p] = true
		}
	})
	// The reason is per container, on every GPU it has.
	each(fams, mCtrReason, func(l map[string]string, _ float64) {
		for i := range r.GPUs {
			for j := range r.GPUs[i].Pods {
				p := &r.GPUs[i].Pods[j]
				if p.Used != nil && holds(p, l) {
					p.Used.Unenforced = l["reason"] + ": " + l["message"]
				}
			}
		}
	})
}

// holds says whether the monitor's series with labels l is the share p's.
// On the DRA path a share is a claim's request, which names every
// container that uses it ("a,b", booking.ContainersOf), and the monitor
// exports the claim's region once per container (docs/dra.md#seeing-what-is-booked):
// any of them is the share's.
func holds(p *PodShare, l map[string]string) bool {
	return p.Namespace == l["namespace"] && p.Pod == l["pod"] && slices.Contains(strings.Split(p.Container, ","), l["container"])
}
