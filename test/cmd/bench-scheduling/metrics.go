package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-io/vgpu/test/daemons"
)

// apiRequests reads the API server's request counters
// (apiserver_request_total), summed by client, verb and resource.
func apiRequests(ctx context.Context, client kubernetes.Interface) (map[string]float64, error) {
	raw, err := client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("API server metrics: %w", err)
	}
	families, err := daemons.ParseMetrics(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("API server metrics: %w", err)
	}
	out := map[string]float64{}
	f := families["apiserver_request_total"]
	if f == nil {
		return out, nil
	}
	for _, m := range f.GetMetric() {
		key := daemons.Label(m, "verb") + " " + daemons.Label(m, "resource")
		if sub := daemons.Label(m, "subresource"); sub != "" {
			key += "/" + sub
		}
		out[key] += m.GetCounter().GetValue()
	}
	return out, nil
}

// requestReport lists the API requests made between two readings, per
// bound pod, most frequent first (those under 0.01 per pod left out).
func requestReport(before, after map[string]float64, pods int) string {
	type count struct {
		key string
		n   float64
	}
	var counts []count
	for k, v := range after {
		if n := (v - before[k]) / float64(max(pods, 1)); n >= 0.01 {
			counts = append(counts, count{k, n})
		}
	}
	sort.Slice(counts, func(i, j int) bool { return counts[i].n > counts[j].n })
	parts := make([]string, len(counts))
	for i, c := range counts {
		parts[i] = fmt.Sprintf("%s %.2f", c.key, c.n)
	}
	return "API requests per pod: " + strings.Join(parts, ", ")
}

// schedulerReport reads kube-scheduler's own metrics once every pod is
// bound: the mean time of its scheduling algorithm and of each extension
// point (where a cycle's time goes), and how often opportunistic batching
// reused an earlier pod's result.
func schedulerReport(ctx context.Context, base string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := insecure.Do(req)
	if err != nil {
		return "", fmt.Errorf("kube-scheduler metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("kube-scheduler metrics: %s", resp.Status)
	}
	families, err := daemons.ParseMetrics(resp.Body)
	if err != nil {
		return "", fmt.Errorf("kube-scheduler metrics: %w", err)
	}
	var parts []string
	mean := func(family, label string) {
		sum, count := map[string]float64{}, map[string]uint64{}
		var keys []string
		for _, m := range families[family].GetMetric() {
			k := daemons.Label(m, label)
			if _, seen := count[k]; !seen {
				keys = append(keys, k)
			}
			sum[k] += m.GetHistogram().GetSampleSum()
			count[k] += m.GetHistogram().GetSampleCount()
		}
		sort.Strings(keys)
		for _, k := range keys {
			if count[k] == 0 {
				continue
			}
			name := k
			if name == "" {
				name = strings.TrimPrefix(strings.TrimSuffix(family, "_duration_seconds"), "scheduler_")
			}
			parts = append(parts, fmt.Sprintf("%s %.2fms", name, 1000*sum[k]/float64(count[k])))
		}
	}
	mean("scheduler_scheduling_algorithm_duration_seconds", "")
	mean("scheduler_framework_extension_point_duration_seconds", "extension_point")
	for _, m := range families["scheduler_batch_attempts_total"].GetMetric() {
		if v := m.GetCounter().GetValue(); v > 0 {
			parts = append(parts, fmt.Sprintf("batch %s %.0f", daemons.Label(m, "result"), v))
		}
	}
	return "kube-scheduler means: " + strings.Join(parts, ", "), nil
}
