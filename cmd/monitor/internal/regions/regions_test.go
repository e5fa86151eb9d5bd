package regions

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// textDecoder accepts files that say "good"; anything else is corrupt.
func textDecoder(b []byte) (Region, error) {
	if string(b) != "good" {
		return Region{}, errors.New("bad magic")
	}
	return Region{Enforced: true}, nil
}

func writeRegion(t *testing.T, dir, name, content string) Entry {
	t.Helper()
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if content != "" {
		if err := os.WriteFile(filepath.Join(d, "region"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	uid, ctr, _ := ParseDirName(name)
	return Entry{PodUID: uid, Container: ctr, Dir: d}
}

func TestListParsesDirectoryNames(t *testing.T) {
	dir := t.TempDir()
	writeRegion(t, dir, "0b4c8c6e-5a7a-4d36-9d8e-2f0e3c1b9a11_train", "good")
	writeRegion(t, dir, "no-underscore", "good")
	writeRegion(t, dir, "_nouid", "good")
	if err := os.WriteFile(filepath.Join(dir, "a_file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].PodUID != "0b4c8c6e-5a7a-4d36-9d8e-2f0e3c1b9a11" || got[0].Container != "train" {
		t.Fatalf("List = %+v, want the one well-named directory", got)
	}
	if got, err := List(filepath.Join(dir, "missing")); err != nil || got != nil {
		t.Fatalf("List(missing) = %v, %v; want nothing and no error", got, err)
	}
}

func TestCorruptRegionIsLoggedOncePerFile(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	r := NewReader(textDecoder, zap.New(core))
	dir := t.TempDir()
	bad := writeRegion(t, dir, "uid1_a", "garbage")
	bad2 := writeRegion(t, dir, "uid2_b", "gar")
	good := writeRegion(t, dir, "uid3_c", "good")
	absent := writeRegion(t, dir, "uid4_d", "")
	// the device plugin's zeroed file, before libvgpu attached
	zeroed := writeRegion(t, dir, "uid5_e", "\x00\x00\x00\x00\x00\x00\x00\x00")

	for scrape := 0; scrape < 5; scrape++ {
		if _, st := r.Read(bad); st != Corrupt {
			t.Fatalf("bad region: status %v, want Corrupt", st)
		}
		if _, st := r.Read(bad2); st != Corrupt {
			t.Fatalf("bad2 region: status %v, want Corrupt", st)
		}
		if reg, st := r.Read(good); st != OK || !reg.Enforced {
			t.Fatalf("good region: %+v %v", reg, st)
		}
		if _, st := r.Read(absent); st != Absent {
			t.Fatalf("absent region: status %v, want Absent", st)
		}
		if _, st := r.Read(zeroed); st != Absent {
			t.Fatalf("zeroed region: status %v, want Absent (not attached yet)", st)
		}
	}
	if _, st, err := r.Check(bad); st != Corrupt || err == nil || err.Error() != "bad magic" {
		t.Fatalf("Check(bad) = %v, %v; want Corrupt and the decoder's error", st, err)
	}
	if n := logs.Len(); n != 2 {
		t.Fatalf("5 scrapes of 2 corrupt files logged %d lines, want 2: %v", n, logs.All())
	}
	if p := logs.All()[0].ContextMap()["path"]; p != bad.Path() {
		t.Fatalf("log names %v, want %s", p, bad.Path())
	}

	// Repaired, then broken again: a new incident, logged again once.
	writeRegion(t, dir, "uid1_a", "good")
	if _, st := r.Read(bad); st != OK {
		t.Fatal("repaired region not read")
	}
	writeRegion(t, dir, "uid1_a", "broken again")
	r.Read(bad)
	r.Read(bad)
	if n := logs.Len(); n != 3 {
		t.Fatalf("after repair and a new break: %d log lines, want 3", n)
	}
}

func TestPruneForgetsRemovedFiles(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	r := NewReader(textDecoder, zap.New(core))
	dir := t.TempDir()
	bad := writeRegion(t, dir, "uid1_a", "garbage")
	r.Read(bad)
	r.Prune(nil)
	if len(r.bad) != 0 {
		t.Fatalf("Prune kept %d entries for files no longer listed", len(r.bad))
	}
	r.Read(bad)
	if logs.Len() != 2 {
		t.Fatalf("a file that came back after being pruned should be reported again; got %d lines", logs.Len())
	}
}

// A prepared claim's region is listed as its holding pod's, once for each
// container that uses the request; one no pod holds yet is not listed.
func TestListWithClaims(t *testing.T) {
	dir, claims := t.TempDir(), t.TempDir()
	for _, d := range []string{filepath.Join(dir, "pod1_main"), filepath.Join(claims, "claimA_gpu"), filepath.Join(claims, "claimB_gpu")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ListWithClaims(dir, Claims{Dir: claims, Users: func(uid, request string) []Holder {
		if uid != "claimA" || request != "gpu" {
			return nil
		}
		return []Holder{{PodUID: "pod2", Containers: []string{"main", "side"}}, {PodUID: "pod3", Containers: []string{"app"}}}
	}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range got {
		names = append(names, e.PodUID+"/"+e.Container+"@"+filepath.Base(filepath.Dir(e.Dir)))
	}
	want := []string{"pod1/main@" + filepath.Base(dir), "pod2/main@" + filepath.Base(claims), "pod2/side@" + filepath.Base(claims), "pod3/app@" + filepath.Base(claims)}
	if !slices.Equal(names, want) {
		t.Errorf("listed %v, want %v", names, want)
	}
	if only, _ := ListWithClaims(dir, Claims{}); len(only) != 1 {
		t.Errorf("without claims: %d entries, want the pod's one", len(only))
	}
}
