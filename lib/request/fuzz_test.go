package request

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// FuzzFromPod feeds arbitrary quantities and annotations: parsing never
// panics, a rejection names the container or annotation at fault, and an
// accepted request is within the documented ranges.
func FuzzFromPod(f *testing.F) {
	f.Add("1", "3000", "", "30", "", "", false)
	f.Add("2", "", "", "", "a100,h100", "binpack", false)
	f.Add("1.5", "", "50", "100", "", "", true)
	f.Add("", "-1", "", "0", " , ", "x", false)
	f.Fuzz(func(t *testing.T, gpu, mem, pct, cores, types, policy string, privileged bool) {
		c := corev1.Container{Name: "c", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{}}}
		for name, v := range map[string]string{"nvidia.com/gpu": gpu, "nvidia.com/gpumem": mem, "nvidia.com/gpumem-percentage": pct, "nvidia.com/gpucores": cores} {
			if v == "" {
				continue
			}
			q, err := resource.ParseQuantity(v)
			if err != nil {
				return
			}
			c.Resources.Limits[corev1.ResourceName(name)] = q
		}
		if privileged {
			c.SecurityContext = &corev1.SecurityContext{Privileged: &privileged}
		}
		p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
		p.Annotations = map[string]string{}
		if types != "" {
			p.Annotations["nvidia.com/use-gputype"] = types
		}
		if policy != "" {
			p.Annotations["vgpu.io/gpu-scheduler-policy"] = policy
		}
		req, err := FromPod(p)
		switch {
		case errors.Is(err, ErrNoGPU):
			return
		case err != nil:
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, `container "c": `) && !strings.HasPrefix(line, "annotation ") {
					t.Fatalf("error line names neither container nor annotation: %q", line)
				}
			}
			return
		}
		for _, rc := range req.Containers {
			if rc.Count < 1 || rc.Count > MaxCount || rc.Cores < 0 || rc.Cores > 100 ||
				rc.MemoryPercent < 0 || rc.MemoryPercent > 100 || rc.MemoryMiB < 0 ||
				(rc.MemoryMiB > 0 && rc.MemoryPercent > 0) || (rc.Cores == 100 && !rc.Exclusive) {
				t.Fatalf("accepted out of range: %+v", rc)
			}
			if privileged && !rc.Exclusive {
				t.Fatalf("privileged share accepted: %+v", rc)
			}
		}
	})
}
