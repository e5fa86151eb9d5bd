// Package allocated encodes vgpu.io/allocated, the device plugin's record on
// a pod of which of its containers Allocate has served. The plugin rebuilds
// from it, after a restart, which containers no longer wait for Allocate.
//
// Value (JSON, versioned like the other vgpu annotations):
//
//	{"version":"v1","node":"gpu-node-1","containers":[
//	  {"name":"setup","init":true,"devices":["GPU-…"]},
//	  {"name":"main","devices":["GPU-…","GPU-…"]}]}
//
// containers lists, in the order Allocate served them, every container that
// was given devices, with the uuids it was given.
package allocated

import (
	"encoding/json"
	"fmt"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// Version is the only version this build writes and reads.
const Version = "v1"

// Container is one served container.
type Container struct {
	Name    string   `json:"name"`
	Init    bool     `json:"init,omitempty"`
	Devices []string `json:"devices"`
}

// Record is the decoded annotation.
type Record struct {
	Node       string      `json:"node"`
	Containers []Container `json:"containers"`
}

type recordV1 struct {
	Version string `json:"version"`
	Record
}

// Has reports whether the container was served.
func (r Record) Has(name string, init bool) bool {
	for _, c := range r.Containers {
		if c.Name == name && c.Init == init {
			return true
		}
	}
	return false
}

// Encode renders the annotation value.
func Encode(r Record) (string, error) {
	b, err := json.Marshal(recordV1{Version: Version, Record: r})
	return string(b), err
}

// Decode parses the annotation value; "" is an empty record.
func Decode(s string) (Record, error) {
	if s == "" {
		return Record{}, nil
	}
	var v recordV1
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return Record{}, fmt.Errorf("%s: malformed JSON: %v", contract.AnnotationAllocated, err)
	}
	if v.Version != Version {
		return Record{}, fmt.Errorf("%s: version %q: this build reads %q", contract.AnnotationAllocated, v.Version, Version)
	}
	return v.Record, nil
}
