// Package annotation encodes and decodes vgpu's versioned JSON annotations:
// the node inventory (vgpu.io/devices) and the pod assignment
// (vgpu.io/assignment). Decoding never panics: a malformed value or an
// unknown version is an error that says what is wrong.
package annotation

import (
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
)

// Version is the only version this build writes and reads.
const Version = "v1"

// ErrMissing is returned when the annotation is absent.
var ErrMissing = errors.New("annotation missing")

type envelope struct {
	Version string `json:"version"`
}

type devicesV1 struct {
	Version string `json:"version"`
	device.Inventory
}

type assignmentV1 struct {
	Version string `json:"version"`
	assign.Pod
}

// EncodeDevices renders a node inventory as the value of vgpu.io/devices.
func EncodeDevices(inv device.Inventory) (string, error) {
	if err := inv.Validate(); err != nil {
		return "", fmt.Errorf("%s: %w", contract.AnnotationDevices, err)
	}
	b, err := json.Marshal(devicesV1{Version: Version, Inventory: inv})
	return string(b), err
}

// DecodeDevices parses the value of vgpu.io/devices.
func DecodeDevices(s string) (device.Inventory, error) {
	var v devicesV1
	if err := decode(contract.AnnotationDevices, s, &v); err != nil {
		return device.Inventory{}, err
	}
	if err := v.Inventory.Validate(); err != nil {
		return device.Inventory{}, fmt.Errorf("%s: %w", contract.AnnotationDevices, err)
	}
	return v.Inventory, nil
}

// EncodeAssignment renders a pod assignment as the value of vgpu.io/assignment.
func EncodeAssignment(p assign.Pod) (string, error) {
	if err := p.Validate(); err != nil {
		return "", fmt.Errorf("%s: %w", contract.AnnotationAssignment, err)
	}
	b, err := json.Marshal(assignmentV1{Version: Version, Pod: p})
	return string(b), err
}

// DecodeAssignment parses the value of vgpu.io/assignment.
func DecodeAssignment(s string) (assign.Pod, error) {
	var v assignmentV1
	if err := decode(contract.AnnotationAssignment, s, &v); err != nil {
		return assign.Pod{}, err
	}
	if err := v.Pod.Validate(); err != nil {
		return assign.Pod{}, fmt.Errorf("%s: %w", contract.AnnotationAssignment, err)
	}
	return v.Pod, nil
}

// DecodePodAssignment parses the pod's vgpu.io/assignment and marks as
// sidecars the init containers its spec declares restartable: an
// assignment written before the sidecar field existed then books them as
// the pod runs them (docs/contract.md#assignment). An init container's
// restartPolicy cannot change, so the spec is as good a witness as the field.
func DecodePodAssignment(p *corev1.Pod) (assign.Pod, error) {
	a, err := DecodeAssignment(p.Annotations[contract.AnnotationAssignment])
	if err != nil {
		return a, err
	}
	for i := range a.Containers {
		c := &a.Containers[i]
		if !c.Init || c.Sidecar {
			continue
		}
		for _, ic := range p.Spec.InitContainers {
			if ic.Name == c.Name && ic.RestartPolicy != nil && *ic.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				c.Sidecar = true
			}
		}
	}
	return a, nil
}

// decode checks the version before it decodes the body strictly, so that an
// annotation written by a newer vgpu is reported as such, not as garbage.
func decode(key, s string, into any) error {
	if s == "" {
		return fmt.Errorf("%s: %w", key, ErrMissing)
	}
	var env envelope
	if err := json.Unmarshal([]byte(s), &env); err != nil {
		return fmt.Errorf("%s: malformed JSON: %v", key, err)
	}
	if env.Version != Version {
		if env.Version == "" {
			return fmt.Errorf("%s: no version field; this build reads version %q", key, Version)
		}
		return fmt.Errorf("%s: unknown version %q; this build reads version %q", key, env.Version, Version)
	}
	// Unknown fields are ignored: a newer writer may add optional fields
	// within one version without breaking older readers.
	if err := json.Unmarshal([]byte(s), into); err != nil {
		return fmt.Errorf("%s: malformed %s value: %v", key, Version, err)
	}
	return nil
}
