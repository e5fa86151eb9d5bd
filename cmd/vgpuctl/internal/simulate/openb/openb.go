// Package openb reads the node and task lists of Alibaba's openb GPU-sharing
// trace (cluster-trace-gpu-v2023, the data of the ATC'23 paper "Beware of
// Fragmentation"), so that placement can be replayed against production
// workloads. It only parses; the caller opens the files.
package openb

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Node is one row of openb_node_list_gpu_node.csv.
type Node struct {
	Name      string
	CPUMilli  int64
	MemoryMiB int64
	GPUs      int
	Model     string
}

// Task is one row of an openb_pod_list_*.csv.
type Task struct {
	Name      string
	CPUMilli  int64
	MemoryMiB int64
	// NumGPU is the number of GPUs; 0 for a CPU-only task.
	NumGPU int
	// GPUMilli is, for NumGPU == 1, the thousandths of one GPU asked for;
	// 1000 means the whole GPU.
	GPUMilli int
	// GPUSpec lists the GPU models allowed; empty means any. The column is
	// optional: the multi-GPU variants of the trace have none.
	GPUSpec []string
	// Created and Deleted are the trace's creation_time and deletion_time,
	// in seconds; HasTimes is false when the list has no such columns (the
	// multi-GPU variants) or a row leaves them empty.
	Created, Deleted int64
	HasTimes         bool
}

// DemandMilli is the task's GPU demand in thousandths of a GPU, the unit of
// the paper's arrived and allocated percentages.
func (t Task) DemandMilli() int64 {
	if t.NumGPU == 1 {
		return int64(t.GPUMilli)
	}
	return int64(t.NumGPU) * 1000
}

// Shares reports whether the task asks for a fraction of one GPU.
func (t Task) Shares() bool { return t.NumGPU == 1 && t.GPUMilli < 1000 }

// ReadNodes parses a node list.
func ReadNodes(r io.Reader) ([]Node, error) {
	var out []Node
	err := readCSV(r, []string{"sn", "cpu_milli", "memory_mib", "gpu", "model"}, nil, func(line int, f fields) error {
		n := Node{Name: f.str("sn"), Model: f.str("model")}
		n.CPUMilli = f.int("cpu_milli", 0, 1<<40)
		n.MemoryMiB = f.int("memory_mib", 0, 1<<40)
		n.GPUs = int(f.int("gpu", 0, 1024))
		if n.Name == "" {
			f.fail("sn", "is empty")
		}
		if n.GPUs > 0 && n.Model == "" {
			f.fail("model", "is empty for a node with GPUs")
		}
		out = append(out, n)
		return f.err
	})
	return out, err
}

// ReadTasks parses a task list.
func ReadTasks(r io.Reader) ([]Task, error) {
	var out []Task
	err := readCSV(r, []string{"name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"}, []string{"gpu_spec", "creation_time", "deletion_time"}, func(line int, f fields) error {
		t := Task{Name: f.str("name")}
		t.CPUMilli = f.int("cpu_milli", 0, 1<<40)
		t.MemoryMiB = f.int("memory_mib", 0, 1<<40)
		t.NumGPU = int(f.int("num_gpu", 0, 1024))
		t.GPUMilli = int(f.int("gpu_milli", 0, 1000))
		if spec := f.str("gpu_spec"); spec != "" {
			for _, s := range strings.Split(spec, "|") {
				if s = strings.TrimSpace(s); s != "" {
					t.GPUSpec = append(t.GPUSpec, s)
				}
			}
		}
		if f.str("creation_time") != "" && f.str("deletion_time") != "" {
			t.Created = f.int("creation_time", 0, 1<<50)
			t.Deleted = f.int("deletion_time", 0, 1<<50)
			t.HasTimes = true
			if t.Deleted < t.Created {
				f.fail("deletion_time", fmt.Sprintf("%d is before creation_time %d", t.Deleted, t.Created))
			}
		}
		if t.NumGPU == 1 && t.GPUMilli == 0 {
			f.fail("gpu_milli", "is 0 for a task with num_gpu 1: must be from 1 to 1000")
		}
		out = append(out, t)
		return f.err
	})
	return out, err
}

type fields struct {
	line int
	rec  []string
	col  map[string]int
	err  error
}

// str is the named column's value; "" for an optional column the file
// lacks.
func (f *fields) str(name string) string {
	i, ok := f.col[name]
	if !ok {
		return ""
	}
	return strings.TrimSpace(f.rec[i])
}

func (f *fields) fail(name, msg string) {
	if f.err == nil {
		f.err = fmt.Errorf("line %d: %s %s", f.line, name, msg)
	}
}

func (f *fields) int(name string, lo, hi int64) int64 {
	s := f.str(name)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo || v > hi {
		f.fail(name, fmt.Sprintf("%q: must be an integer from %d to %d", s, lo, hi))
		return 0
	}
	return v
}

// readCSV checks the header has the wanted columns (in any order, others
// ignored) and calls row for each record. Optional columns are read where
// the header has them.
func readCSV(r io.Reader, want, optional []string, row func(line int, f fields) error) error {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty file: want a CSV header with " + strings.Join(want, ","))
		}
		return fmt.Errorf("header: %v", err)
	}
	col := map[string]int{}
	known := map[string]bool{}
	for _, k := range append(append([]string{}, want...), optional...) {
		known[k] = true
	}
	for i, h := range head {
		if h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")); known[h] {
			col[h] = i
		}
	}
	for _, w := range want {
		if _, ok := col[w]; !ok {
			return fmt.Errorf("header: column %q missing; want %s", w, strings.Join(want, ","))
		}
	}
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := row(line, fields{line: line, rec: rec, col: col}); err != nil {
			return err
		}
	}
}
