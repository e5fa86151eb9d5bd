// Package reconcile runs what the node agent publishes from its GPU state
// (the Node inventory, the ResourceSlice): on every state change and every
// kick, never on a timer, and after a failure again with backoff.
package reconcile

import (
	"context"
	"time"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
)

// Loop calls sync until ctx ends: once at start, then after each change of
// state, each value on kick, and each retry. failed hears every error with
// the delay before the retry (1 s, doubling up to a minute).
func Loop(ctx context.Context, state *gpustate.State, kick <-chan struct{}, sync func(context.Context) error, failed func(err error, retryIn time.Duration)) {
	changed, cancel := state.Subscribe()
	defer cancel()
	backoff := time.Second
	var retry <-chan time.Time
	for {
		if err := sync(ctx); err != nil {
			failed(err, backoff)
			retry = time.After(backoff)
			backoff = min(2*backoff, time.Minute)
		} else {
			retry, backoff = nil, time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-kick:
		case <-retry:
		}
	}
}
