package daemons

import (
	"math"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func TestQuantileInterpolatesInsideTheBucket(t *testing.T) {
	b := func(le float64, n uint64) *dto.Bucket { return &dto.Bucket{UpperBound: &le, CumulativeCount: &n} }
	count := uint64(100)
	h := &dto.Histogram{SampleCount: &count, Bucket: []*dto.Bucket{b(0.002, 90), b(0.001, 50), b(0.004, 100)}}
	cases := []struct{ q, want float64 }{
		{0.25, 0.0005}, // half of the first bucket [0, 1ms]
		{0.50, 0.001},
		{0.70, 0.0015}, // 20 of the 40 in (1ms, 2ms]
		{0.99, 0.0038}, // 9 of the 10 in (2ms, 4ms]
	}
	for _, c := range cases {
		if got := quantile(c.q, h); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("q%.2f = %g, want %g", c.q, got, c.want)
		}
	}
	zero := uint64(0)
	if !math.IsNaN(quantile(0.5, &dto.Histogram{SampleCount: &zero})) {
		t.Error("quantile of an empty histogram is not NaN")
	}
}
