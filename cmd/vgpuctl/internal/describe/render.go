package describe

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

const barWidth = 10

// bar draws used/total as a short gauge, e.g. [######----].
func bar(used, total int64) string {
	n := 0
	if total > 0 {
		n = int((used*barWidth + total/2) / total)
	}
	n = min(max(n, 0), barWidth)
	if used > 0 && n == 0 {
		n = 1 // something is there: show it
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat("-", barWidth-n) + "]"
}

func health(ok bool) string {
	if ok {
		return "Healthy"
	}
	return "Unhealthy"
}

func freeText(f *Free) string {
	if f == nil {
		return "none (every GPU is full, held whole or unhealthy)"
	}
	return fmt.Sprintf("GPU %d: %d MiB, %d%% cores, %d vGPU slots", f.GPU, f.MemoryMiB, f.Cores, f.Slots)
}

func pct(v *int) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%d%%", *v)
}

func coresText(c int) string {
	if c == 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%d%%", c)
}

// renderNode writes `describe node NAME` for people.
func renderNode(w io.Writer, r NodeReport) error {
	s := summarize(r)
	var b strings.Builder
	fmt.Fprintf(&b, "Name:           %s\n", r.Name)
	fmt.Fprintf(&b, "GPUs:           %d (%d healthy), split count %d, memory scaling %g\n", s.GPUs, s.HealthyGPUs, r.SplitCount, r.MemoryScaling)
	fmt.Fprintf(&b, "Allocated:      vGPU slots %d/%d, memory %d/%d MiB, cores %d/%d\n",
		s.SlotsUsed, s.SlotsTotal, s.MemoryAllocatedMiB, s.MemoryCapacityMiB, s.CoresAllocated, s.CoresTotal)
	fmt.Fprintf(&b, "Largest free:   %s\n", freeText(r.LargestFree))
	if r.Usage != nil {
		if r.Usage.Error != "" {
			fmt.Fprintf(&b, "Usage:          unavailable, showing allocation only (monitor %s: %s)\n", r.Usage.Source, r.Usage.Error)
		} else {
			fmt.Fprintf(&b, "Usage:          measured by the monitor at %s\n", r.Usage.Source)
		}
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "Warning:        %s\n", w)
	}
	withUsage := r.Usage != nil && r.Usage.Error == ""
	for _, g := range r.GPUs {
		b.WriteString("\n")
		if g.InInventory {
			fmt.Fprintf(&b, "GPU %d  %s  %s  %s", g.Index, g.Model, g.UUID, health(g.Healthy))
		} else {
			fmt.Fprintf(&b, "GPU ?  %s  no longer in the node's inventory, still held by pods", g.UUID)
		}
		if g.Exclusive {
			b.WriteString("  (held whole)")
		}
		b.WriteString("\n")
		fmt.Fprintf(&b, "  memory  %s  %d/%d MiB\n", bar(g.MemoryAllocatedMiB, g.MemoryCapacityMiB), g.MemoryAllocatedMiB, g.MemoryCapacityMiB)
		fmt.Fprintf(&b, "  cores   %s  %d/%d\n", bar(int64(g.CoresAllocated), int64(g.CoresTotal)), g.CoresAllocated, g.CoresTotal)
		fmt.Fprintf(&b, "  slots   %s  %d/%d\n", bar(int64(g.SlotsUsed), int64(g.SlotsTotal)), g.SlotsUsed, g.SlotsTotal)
		if withUsage && g.Used != nil {
			fmt.Fprintf(&b, "  used    %d MiB, utilisation %s\n", g.Used.MemoryUsedMiB, pct(g.Used.UtilizationPercent))
		}
		if len(g.Pods) == 0 {
			b.WriteString("  no pods\n")
			continue
		}
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		if withUsage {
			fmt.Fprintln(tw, "  NAMESPACE\tPOD\tCONTAINER\tMEMORY\tCORES\tUSED\tUTIL\tENFORCED")
		} else {
			fmt.Fprintln(tw, "  NAMESPACE\tPOD\tCONTAINER\tMEMORY\tCORES")
		}
		for _, p := range g.Pods {
			ctr := p.Container
			if p.Sidecar {
				ctr += " (sidecar)"
			} else if p.Init {
				ctr += " (init)"
			}
			line := fmt.Sprintf("  %s\t%s\t%s\t%d MiB\t%s", p.Namespace, p.Pod, ctr, p.MemoryMiB, coresText(p.Cores))
			if withUsage {
				if p.Used != nil {
					line += fmt.Sprintf("\t%d MiB\t%s\t%s", p.Used.MemoryUsedMiB, pct(p.Used.UtilizationPercent), yesNo(p.Used.Enforced))
				} else {
					line += "\t-\t-\t-"
				}
			}
			fmt.Fprintln(tw, line)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, p := range g.Pods {
			if withUsage && p.Used != nil && p.Used.Unenforced != "" {
				fmt.Fprintf(&b, "  ! %s/%s/%s: limits NOT enforced (%s)\n", p.Namespace, p.Pod, p.Container, p.Used.Unenforced)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

// renderList writes `describe node` (no name) for people.
func renderList(w io.Writer, ss []NodeSummary) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tGPUS\tSLOTS\tMEMORY (MiB)\tCORES (%)\tLARGEST FREE ON ONE GPU")
	for _, s := range ss {
		gpus := fmt.Sprint(s.GPUs)
		if s.HealthyGPUs < s.GPUs {
			gpus = fmt.Sprintf("%d (%d unhealthy)", s.GPUs, s.GPUs-s.HealthyGPUs)
		}
		free := "none"
		if f := s.LargestFree; f != nil {
			free = fmt.Sprintf("%d MiB, %d%% cores (GPU %d)", f.MemoryMiB, f.Cores, f.GPU)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d/%d (%d%%)\t%d/%d\t%s\n", s.Name, gpus, s.SlotsUsed, s.SlotsTotal,
			s.MemoryAllocatedMiB, s.MemoryCapacityMiB, percentOf(s.MemoryAllocatedMiB, s.MemoryCapacityMiB),
			s.CoresAllocated, s.CoresTotal, free)
	}
	return tw.Flush()
}

func percentOf(a, b int64) int64 {
	if b == 0 {
		return 0
	}
	return a * 100 / b
}
