package openb

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestReadTasks(t *testing.T) {
	in := "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos\n" +
		"a,12000,16384,1,460,,LS\n" +
		"b,1000,2048,0,0,,BE\n" +
		"c,8000,4096,8,1000,V100M16|V100M32,LS\n"
	got, err := ReadTasks(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Task{
		{Name: "a", CPUMilli: 12000, MemoryMiB: 16384, NumGPU: 1, GPUMilli: 460},
		{Name: "b", CPUMilli: 1000, MemoryMiB: 2048},
		{Name: "c", CPUMilli: 8000, MemoryMiB: 4096, NumGPU: 8, GPUMilli: 1000, GPUSpec: []string{"V100M16", "V100M32"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	if d := got[0].DemandMilli() + got[1].DemandMilli() + got[2].DemandMilli(); d != 8460 {
		t.Fatalf("demand %d", d)
	}
	if !got[0].Shares() || got[2].Shares() {
		t.Fatal("Shares wrong")
	}
}

// The multi-GPU variants of the trace have neither gpu_spec nor times.
func TestReadTasksOptionalColumns(t *testing.T) {
	got, err := ReadTasks(strings.NewReader("name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,8000,4096,4,1000\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Task{{Name: "a", CPUMilli: 8000, MemoryMiB: 4096, NumGPU: 4, GPUMilli: 1000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	got, err = ReadTasks(strings.NewReader("name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\na,1,1,0,0,10,25\nb,1,1,0,0,,\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].HasTimes || got[0].Created != 10 || got[0].Deleted != 25 || got[1].HasTimes {
		t.Fatalf("times: %+v", got)
	}
	if _, err := ReadTasks(strings.NewReader("name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\na,1,1,0,0,30,25\n")); err == nil || !strings.Contains(err.Error(), "deletion_time 25 is before creation_time 30") {
		t.Fatalf("err = %v", err)
	}
}

func TestReadErrors(t *testing.T) {
	cases := map[string]string{
		"":                 "empty file",
		"name,cpu_milli\n": `column "memory_mib" missing`,
		"name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\nx,1,1,1,1500,\n": `line 2: gpu_milli "1500": must be an integer from 0 to 1000`,
		"name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\nx,1,1,1,0,\n":    `line 2: gpu_milli is 0`,
		"name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\nx,a,1,1,1,\n":    `line 2: cpu_milli "a"`,
	}
	for in, want := range cases {
		if _, err := ReadTasks(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", in, err, want)
		}
	}
	if _, err := ReadNodes(strings.NewReader("sn,cpu_milli,memory_mib,gpu,model\nn,1,1,2,\n")); err == nil || !strings.Contains(err.Error(), "model is empty") {
		t.Errorf("err = %v", err)
	}
}

// TestSharedTraces reads the real trace files when the checkout has them.
func TestSharedTraces(t *testing.T) {
	dir := "../../../shared/traces/openb/"
	f, err := os.Open(dir + "openb_node_list_gpu_node.csv")
	if err != nil {
		t.Skip("trace not present:", err)
	}
	defer f.Close()
	nodes, err := ReadNodes(f)
	if err != nil {
		t.Fatal(err)
	}
	gpus := 0
	for _, n := range nodes {
		gpus += n.GPUs
	}
	if len(nodes) != 1213 || gpus != 6212 {
		t.Fatalf("%d nodes, %d GPUs; the README says 1213 and 6212", len(nodes), gpus)
	}
	p, err := os.Open(dir + "openb_pod_list_default.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tasks, err := ReadTasks(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 8152 {
		t.Fatalf("%d tasks, want 8152", len(tasks))
	}
	m, err := os.Open(dir + "openb_pod_list_multigpu20.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	multi, err := ReadTasks(m)
	if err != nil {
		t.Fatal(err)
	}
	many := 0
	for _, task := range multi {
		if task.NumGPU > 1 {
			many++
		}
	}
	if many == 0 {
		t.Fatal("multigpu20 read without a multi-GPU task")
	}
}
