package simulate

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/vgpu-io/vgpu/lib/placement"
)

// Stat is a mean over seeds and the spread (min and max) around it.
type Stat struct {
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
}

// MarshalJSON writes null for a stat with no data.
func (s Stat) MarshalJSON() ([]byte, error) {
	if math.IsNaN(s.Mean) {
		return []byte("null"), nil
	}
	type plain Stat
	return json.Marshal(plain(s))
}

func stat(xs []float64) Stat {
	s := Stat{Mean: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	sum, n := 0.0, 0
	for _, x := range xs {
		if math.IsNaN(x) {
			continue
		}
		if n == 0 || x < s.Min {
			s.Min = x
		}
		if n == 0 || x > s.Max {
			s.Max = x
		}
		sum += x
		n++
	}
	if n > 0 {
		s.Mean = sum / float64(n)
	}
	return s
}

// CurvePoint is the allocation at one arrived level.
type CurvePoint struct {
	ArrivedPct int  `json:"arrivedPct"`
	AllocPct   Stat `json:"allocPct"`
}

// Summary is the outcome of one policy pair over every seed.
type Summary struct {
	// Label names a column that is not a plain policy pair ("fgd").
	Label      string       `json:"label,omitempty"`
	NodePolicy string       `json:"nodePolicy"`
	GPUPolicy  string       `json:"gpuPolicy"`
	Seeds      []uint64     `json:"seeds"`
	Curve      []CurvePoint `json:"curve"`
	// Headline is the allocation % at 100 % arrived.
	Headline Stat `json:"allocAt100Pct"`
	// FirstFailPct is averaged over the seeds in which a GPU pod failed.
	FirstFailPct      Stat  `json:"firstFailureArrivedPct"`
	PlacedPct         Stat  `json:"placedOfArrivedPct"`
	Submitted         Stat  `json:"submitted"`
	Failed            Stat  `json:"failed"`
	FailedGPU         Stat  `json:"failedGPU"`
	Fragmented        Stat  `json:"fragmentedGPUs"`
	FragmentedFreePct Stat  `json:"fragmentedFreePct"`
	FragmentThreshold int64 `json:"fragmentThresholdMilli"`
	WallSeconds       Stat  `json:"wallSeconds"`
}

// Summarize folds the runs of one policy pair.
func Summarize(pol placement.Policies, runs []*Run) Summary {
	s := Summary{NodePolicy: string(pol.Node), GPUPolicy: string(pol.GPU)}
	col := func(f func(r *Run) float64) Stat {
		xs := make([]float64, len(runs))
		for i, r := range runs {
			xs[i] = f(r)
		}
		return stat(xs)
	}
	for _, r := range runs {
		s.Seeds = append(s.Seeds, r.Seed)
		s.FragmentThreshold = r.FragmentThreshold
	}
	for _, lv := range Levels {
		s.Curve = append(s.Curve, CurvePoint{ArrivedPct: lv, AllocPct: col(func(r *Run) float64 { return r.AllocAt(lv) })})
	}
	s.Headline = col(func(r *Run) float64 { return r.AllocAt(100) })
	s.FirstFailPct = col(func(r *Run) float64 {
		if r.FirstFailPct < 0 {
			return math.NaN()
		}
		return r.FirstFailPct
	})
	s.PlacedPct = col(func(r *Run) float64 { return r.PlacedPct })
	s.Submitted = col(func(r *Run) float64 { return float64(r.Submitted) })
	s.Failed = col(func(r *Run) float64 { return float64(r.Failed) })
	s.FailedGPU = col(func(r *Run) float64 { return float64(r.FailedGPU) })
	s.Fragmented = col(func(r *Run) float64 { return float64(r.Fragmented) })
	s.FragmentedFreePct = col(func(r *Run) float64 { return r.FragmentedFreePct })
	s.WallSeconds = col(func(r *Run) float64 { return r.Wall.Seconds() })
	return s
}

// Report is everything one simulate command computed.
type Report struct {
	Cluster       string  `json:"cluster"`
	Nodes         int     `json:"nodes"`
	GPUs          int     `json:"gpus"`
	Workload      string  `json:"workload"`
	Tasks         int     `json:"tasks"`
	SplitCount    int     `json:"splitCount"`
	MemoryScaling float64 `json:"memoryScaling"`
	TargetPct     float64 `json:"targetArrivedPct"`
	// SamplePercent is the percentageOfNodesToScore modelled; 100 ranks
	// every node for every pod.
	SamplePercent int       `json:"percentageOfNodesToScore"`
	Results       []Summary `json:"results"`
}

// WriteTable writes the report as a table, one column per policy pair.
func (r *Report) WriteTable(w io.Writer) error {
	seeds := r.Results[0].Seeds
	seedText := fmt.Sprintf("seed %d", seeds[0])
	if len(seeds) > 1 {
		seedText = fmt.Sprintf("seeds %d..%d (mean, [min–max])", seeds[0], seeds[len(seeds)-1])
	}
	fmt.Fprintf(w, "cluster %s: %d nodes, %d GPUs · workload %s: %d tasks\n", r.Cluster, r.Nodes, r.GPUs, r.Workload, r.Tasks)
	sample := ""
	if r.SamplePercent < 100 {
		sample = fmt.Sprintf(" · each pod ranked among %d nodes (percentageOfNodesToScore %d)", sampleSize(r.Nodes, r.SamplePercent), r.SamplePercent)
	}
	fmt.Fprintf(w, "split count %d · memory scaling %g · %s%s\n\n", r.SplitCount, r.MemoryScaling, seedText, sample)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"arrived %"}
	for _, s := range r.Results {
		if s.Label != "" {
			head = append(head, s.Label)
			continue
		}
		head = append(head, s.NodePolicy+"/"+s.GPUPolicy)
	}
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t") }
	row(head...)
	row(rule(len(head))...)
	for i, lv := range Levels {
		cells := []string{fmt.Sprint(lv)}
		if lv == 100 {
			cells[0] = "» 100"
		}
		for _, s := range r.Results {
			cells = append(cells, pctCell(s.Curve[i].AllocPct, len(seeds) > 1))
		}
		row(cells...)
	}
	row(rule(len(head))...)
	line := func(label string, f func(s Summary) string) {
		cells := []string{label}
		for _, s := range r.Results {
			cells = append(cells, f(s))
		}
		row(cells...)
	}
	line("first failure at arrived %", func(s Summary) string {
		if math.IsNaN(s.FirstFailPct.Mean) {
			return "none"
		}
		return fmt.Sprintf("%.1f", s.FirstFailPct.Mean)
	})
	line("GPU demand placed, % of arrived", func(s Summary) string { return fmt.Sprintf("%.1f", s.PlacedPct.Mean) })
	line("pods submitted", func(s Summary) string { return fmt.Sprintf("%.0f", s.Submitted.Mean) })
	line("pods failed (GPU pods)", func(s Summary) string {
		return fmt.Sprintf("%.0f (%.0f)", s.Failed.Mean, s.FailedGPU.Mean)
	})
	line("fragmented GPUs at end", func(s Summary) string {
		return fmt.Sprintf("%.0f (%.1f%% free)", s.Fragmented.Mean, s.FragmentedFreePct.Mean)
	})
	line("replay wall time, s", func(s Summary) string { return fmt.Sprintf("%.3f", s.WallSeconds.Mean) })
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Results {
		if s.Label == "fgd" {
			fmt.Fprintln(w, "\nfgd is the FGD baseline: the fragmentation policy measured as the paper does, against the\n"+
				"whole workload's mix of shapes known up front; fragmentation/fragmentation learns its mix as pods arrive.")
			break
		}
	}
	fmt.Fprintf(w, "\ncolumns are node policy/GPU policy; cells are the %% of cluster GPU capacity allocated once\n"+
		"that %% of capacity has been asked for (arrived). » marks the headline, at 100 %% arrived.\n"+
		"A fragmented GPU is partly used with less than the typical share (%d milli) left.\n", r.Results[0].FragmentThreshold)
	return nil
}

func rule(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "---"
	}
	return out
}

func pctCell(s Stat, spread bool) string {
	if math.IsNaN(s.Mean) {
		return "-"
	}
	if spread {
		return fmt.Sprintf("%.1f [%.1f–%.1f]", s.Mean, s.Min, s.Max)
	}
	return fmt.Sprintf("%.1f", s.Mean)
}
