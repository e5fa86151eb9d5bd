package allocated

import (
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	r := Record{Node: "n1", Containers: []Container{
		{Name: "setup", Init: true, Devices: []string{"GPU-a"}},
		{Name: "main", Devices: []string{"GPU-a", "GPU-b"}},
	}}
	s, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip: got %+v, want %+v", got, r)
	}
	if !got.Has("setup", true) || got.Has("setup", false) || !got.Has("main", false) {
		t.Fatalf("Has does not tell init and regular containers apart: %+v", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"version":"v9","containers":[]}`: `version "v9"`,
		`not json`:                         "malformed JSON",
	} {
		if _, err := Decode(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%q) = %v, want an error containing %q", in, err, want)
		}
	}
	if r, err := Decode(""); err != nil || len(r.Containers) != 0 {
		t.Errorf("Decode(\"\") = %+v, %v; want an empty record", r, err)
	}
}
