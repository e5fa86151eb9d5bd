package daemons

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Quantiles are latency quantiles of one extender verb, in seconds,
// estimated from its histogram as Prometheus' histogram_quantile does.
type Quantiles struct {
	Count    uint64
	P50, P99 float64
}

// Latency reads the extender's request histograms and returns, per verb
// (filter, prioritize, bind), the count and p50/p99.
func (e *Extender) Latency(ctx context.Context) (map[string]Quantiles, error) {
	text, err := e.Metrics(ctx)
	if err != nil {
		return nil, err
	}
	families, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("extender metrics: %w", err)
	}
	fam, ok := families["vgpu_extender_request_duration_seconds"]
	if !ok {
		return nil, fmt.Errorf("extender metrics: no vgpu_extender_request_duration_seconds")
	}
	out := map[string]Quantiles{}
	for _, m := range fam.GetMetric() {
		h := m.GetHistogram()
		out[Label(m, "verb")] = Quantiles{Count: h.GetSampleCount(), P50: quantile(0.50, h), P99: quantile(0.99, h)}
	}
	return out, nil
}

// ParseMetrics reads the Prometheus text format into metric families, by
// name.
func ParseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(r)
}

// Label is the value of a metric's label, "" when it has none of that name.
func Label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// quantile interpolates linearly inside the bucket that holds the rank.
func quantile(q float64, h *dto.Histogram) float64 {
	total := float64(h.GetSampleCount())
	if total == 0 {
		return math.NaN()
	}
	buckets := append([]*dto.Bucket(nil), h.GetBucket()...)
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].GetUpperBound() < buckets[j].GetUpperBound() })
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range buckets {
		upper, count := b.GetUpperBound(), float64(b.GetCumulativeCount())
		if count >= rank {
			if count == below {
				return upper
			}
			return lower + (upper-lower)*(rank-below)/(count-below)
		}
		lower, below = upper, count
	}
	return lower // beyond the last finite bucket
}
