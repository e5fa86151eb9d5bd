package placement

import (
	"slices"
	"testing"
)

// TestExtenderPriorities: the best rated nodes get 10, the worst 0, and a
// node rated just below the best 9, never 10: kube-scheduler then follows
// the policy by at least one whole step.
func TestExtenderPriorities(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ratings []float64
		want    []int64
	}{
		{"one node", []float64{0.3}, []int64{10}},
		{"all equal", []float64{0.5, 0.5, 0.5}, []int64{10, 10, 10}},
		{"linear between worst and best", []float64{0, 0.25, 0.5, 1}, []int64{0, 2, 5, 10}},
		{"just below the best is 9", []float64{0, 0.999, 1}, []int64{0, 9, 10}},
		{"negative ratings (fragmentation)", []float64{-3, -1, -2, -1}, []int64{0, 10, 5, 10}},
		{"none", nil, []int64{}},
	} {
		if got := ExtenderPriorities(tc.ratings); !slices.Equal(got, tc.want) {
			t.Errorf("%s: ExtenderPriorities(%v) = %v, want %v", tc.name, tc.ratings, got, tc.want)
		}
	}
}
