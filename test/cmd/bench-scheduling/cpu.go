package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat; Linux fixes
// it at 100 for user space whatever the kernel's own tick.
const userHZ = 100

// cpuTimes reads the CPU time (user + system) each process has used so far;
// a process that has gone is left out.
func cpuTimes(pids map[string]int) map[string]time.Duration {
	out := make(map[string]time.Duration, len(pids))
	for name, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces; fields count from
		// the last ')'.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out[name] = time.Duration(utime+stime) * time.Second / userHZ
	}
	return out
}

// cpuReport says how much CPU each component used between two readings,
// per bound pod, largest first: on a machine with few cores this, more than
// any latency, decides throughput.
func cpuReport(before, after map[string]time.Duration, pods int, wall time.Duration) string {
	type use struct {
		name string
		d    time.Duration
	}
	var uses []use
	var total time.Duration
	for name, a := range after {
		d := a - before[name]
		uses = append(uses, use{name, d})
		total += d
	}
	sort.Slice(uses, func(i, j int) bool { return uses[i].d > uses[j].d })
	parts := []string{fmt.Sprintf("CPU per pod %.2fms (%.2f cores busy)", perPod(total, pods), total.Seconds()/wall.Seconds())}
	for _, u := range uses {
		parts = append(parts, fmt.Sprintf("%s %.2fms", u.name, perPod(u.d, pods)))
	}
	return strings.Join(parts, ", ")
}

func perPod(d time.Duration, pods int) float64 {
	return float64(d.Microseconds()) / 1000 / float64(max(pods, 1))
}

// idleWindow is how long the cluster's CPU use is measured before the
// scheduler starts.
const idleWindow = 5 * time.Second

// idleReport says how many cores each component kept busy with no pod to
// schedule: the background every mode pays per second, not per pod.
func idleReport(before, after map[string]time.Duration, wall time.Duration) string {
	var total time.Duration
	var names []string
	for name := range after {
		names = append(names, name)
	}
	sort.Strings(names)
	var parts []string
	for _, name := range names {
		d := after[name] - before[name]
		total += d
		parts = append(parts, fmt.Sprintf("%s %.2f", name, d.Seconds()/wall.Seconds()))
	}
	return fmt.Sprintf("idle before scheduling %.2f cores busy: %s", total.Seconds()/wall.Seconds(), strings.Join(parts, ", "))
}
