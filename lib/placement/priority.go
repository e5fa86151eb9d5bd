package placement

import "math"

// MaxExtenderPriority is kube-scheduler's extender score ceiling
// (extenderv1.MaxExtenderPriority).
const MaxExtenderPriority = 10

// ExtenderPriorities maps the full-precision ratings of the nodes that
// passed a pod's filter (Scorer.Score, aligned with the nodes) onto the
// extender's 0..MaxExtenderPriority scale, as the extender answers
// /prioritize and the simulator's model of kube-scheduler reads it
// (docs/placement.md). kube-scheduler's 11 steps are too coarse to tell
// apart nodes a small share changes little, so the ratings are normalised
// over the nodes of one call, as kube-scheduler's own plugins normalise
// theirs: the best node gets the ceiling, the worst 0, and any node rated
// below the best at most one step less, so that kube-scheduler's choice
// follows the policy unless its own plugins outweigh a whole step.
func ExtenderPriorities(ratings []float64) []int64 {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range ratings {
		lo, hi = min(lo, v), max(hi, v)
	}
	out := make([]int64, len(ratings))
	for i, v := range ratings {
		out[i] = MaxExtenderPriority
		if v < hi {
			out[i] = min(MaxExtenderPriority-1, int64(math.Floor(MaxExtenderPriority*(v-lo)/(hi-lo))))
		}
	}
	return out
}
