// Package regions finds and reads the shared region files that libvgpu
// writes, one per container, under the node's containers directory
// (<dir>/<pod-uid>_<container>/region). A file that cannot be decoded is
// skipped and reported once, not on every scan: a half-written or foreign
// file must neither crash the monitor nor flood its log.
package regions

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-io/vgpu/lib/contract"
)

// Device is one vGPU of a container as its region records it.
type Device struct {
	UUID             string
	MemoryLimitBytes uint64
	MemoryUsedBytes  uint64
	// CoresLimit is the SM share in percent, 0 = no limit.
	CoresLimit int
	// UnslottedBytes is the part of MemoryUsedBytes held by processes that
	// found every process slot taken: counted for the container, not for
	// any one process.
	UnslottedBytes uint64
	// SharedBytes is the part of MemoryUsedBytes held in exported memory
	// (VMM handles shared between processes), counted once for the
	// container whichever processes map it.
	SharedBytes uint64
}

// Process is one process of the container that opened the region, in the
// container's own pid namespace.
type Process struct {
	PID int32
	// StartTime identifies the process with its pid (field 22 of
	// /proc/<pid>/stat).
	StartTime uint64
	// MemoryUsedBytes is what libvgpu counts for this process, per device
	// of the region (same order as Region.Devices).
	MemoryUsedBytes []uint64
}

// Region is what the monitor needs from one container's shared region.
type Region struct {
	// Enforced is false when libvgpu could not enforce the limits and said so.
	Enforced bool
	// Reason and ReasonText say why not, when not enforced.
	Reason, ReasonText string
	Devices            []Device
	Processes          []Process
}

// Decoder turns a region file's bytes into a Region, or says why it cannot.
type Decoder func([]byte) (Region, error)

// Entry is one container's region directory.
type Entry struct {
	PodUID    string
	Container string
	// Dir is the region directory; the file is Dir/contract.RegionFileName.
	Dir string
	// ModTime is the directory's modification time.
	ModTime time.Time
}

// Path is the region file of the entry.
func (e Entry) Path() string { return filepath.Join(e.Dir, contract.RegionFileName) }

// ParseDirName splits "<pod-uid>_<container>". Pod uids never contain an
// underscore and container names are DNS labels, so the first underscore
// is the separator.
func ParseDirName(name string) (podUID, container string, ok bool) {
	podUID, container, ok = strings.Cut(name, "_")
	if !ok || podUID == "" || container == "" {
		return "", "", false
	}
	return podUID, container, true
}

// List returns the region directories under dir, sorted by name. A missing
// dir is not an error: no container has a region yet.
func List(dir string) ([]Entry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		if !de.IsDir() {
			continue
		}
		uid, ctr, ok := ParseDirName(de.Name())
		if !ok {
			continue
		}
		e := Entry{PodUID: uid, Container: ctr, Dir: filepath.Join(dir, de.Name())}
		if info, err := de.Info(); err == nil {
			e.ModTime = info.ModTime()
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dir < out[j].Dir })
	return out, nil
}

// Claims locates the regions of prepared DRA claims
// (docs/contract.md#on-the-dra-path): named by claim uid and request, each
// is the region of the containers that use that request, in every pod the
// claim is reserved for. Users names them.
type Claims struct {
	Dir   string
	Users func(claimUID, request string) []Holder
}

// Holder is a pod that holds a prepared claim, with its containers that use
// the claim's request.
type Holder struct {
	PodUID     string
	Containers []string
}

// ListWithClaims lists dir's regions and, when claims has a directory,
// those of prepared claims: one entry per container of each holding pod
// that uses the claim's request, with that pod's uid in PodUID, so that a
// claim's region is read, reported and audited as each of its containers'
// own. A claim no pod of the node holds yet is left out. Entries of one
// claim share their Dir.
func ListWithClaims(dir string, claims Claims) ([]Entry, error) {
	out, err := List(dir)
	if err != nil || claims.Dir == "" || claims.Users == nil {
		return out, err
	}
	more, err := List(claims.Dir)
	for _, e := range more {
		for _, h := range claims.Users(e.PodUID, e.Container) {
			for _, c := range h.Containers {
				e := e
				e.PodUID, e.Container = h.PodUID, c
				out = append(out, e)
			}
		}
	}
	return out, err
}

// Reader reads region files and remembers which ones were bad, so that
// each bad file is logged once until it turns good or disappears.
type Reader struct {
	decode Decoder
	log    *zap.Logger
	mu     sync.Mutex
	bad    map[string]bool
}

// NewReader returns a Reader that decodes with decode.
func NewReader(decode Decoder, log *zap.Logger) *Reader {
	return &Reader{decode: decode, log: log, bad: map[string]bool{}}
}

// Status of one read.
type Status int

const (
	// OK: the region was read.
	OK Status = iota
	// Absent: the directory exists but libvgpu has not attached to the
	// region yet (no file, or the device plugin's zeroed file).
	Absent
	// Corrupt: the file exists but cannot be decoded.
	Corrupt
)

// Read reads the entry's region file.
func (r *Reader) Read(e Entry) (Region, Status) {
	reg, st, _ := r.Check(e)
	return reg, st
}

// Check reads the entry's region file and, when it is Corrupt, says why.
func (r *Reader) Check(e Entry) (Region, Status, error) {
	path := e.Path()
	b, err := os.ReadFile(path)
	// The device plugin creates the file zeroed; libvgpu writes the magic
	// when its first process attaches (docs/contract.md#the-region-file).
	if errors.Is(err, fs.ErrNotExist) || (err == nil && uninitialised(b)) {
		r.forget(path)
		return Region{}, Absent, nil
	}
	if err == nil {
		var reg Region
		reg, err = r.decode(b)
		if err == nil {
			r.forget(path)
			return withHostLimits(e, reg), OK, nil
		}
	}
	r.mu.Lock()
	first := !r.bad[path]
	r.bad[path] = true
	r.mu.Unlock()
	if first {
		r.log.Warn("skipping unreadable region file; it is reported once until it changes state",
			zap.String("path", path), zap.String("podUID", e.PodUID), zap.String("container", e.Container), zap.Error(err))
	}
	return Region{}, Corrupt, err
}

// uninitialised reports a file of zeros where the magic goes.
func uninitialised(b []byte) bool {
	return len(b) >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0
}

func (r *Reader) forget(path string) {
	r.mu.Lock()
	delete(r.bad, path)
	r.mu.Unlock()
}

// Prune drops the memory of bad files that are no longer listed.
func (r *Reader) Prune(live []Entry) {
	keep := make(map[string]bool, len(live))
	for _, e := range live {
		keep[e.Path()] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.bad {
		if !keep[p] {
			delete(r.bad, p)
		}
	}
}

// String names the entry as its directory does, for logs.
func (e Entry) String() string { return contract.ContainerDirName(e.PodUID, e.Container) }
