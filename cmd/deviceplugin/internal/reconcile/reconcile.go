// Package reconcile runs what the node agent publishes from its GPU state
// (the Node inventory, the ResourceSlice): on every state change and every
// kick, never on a timer, and after a failure again with backoff.
package reconcile

import (
	"context"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
)

// Loop calls sync until ctx ends: once at start, then after each change of
// state, each value on kick, and each retry. Retries go through a client-go
// workqueue with per-item exponential backoff (base, doubling up to a
// minute; 0 means a second), and events that arrive meanwhile fold into one
// sync. failed hears every error with the delay before the retry.
func Loop(ctx context.Context, name string, state *gpustate.State, kick <-chan struct{}, base time.Duration,
	sync func(context.Context) error, failed func(err error, retryIn time.Duration)) {
	if base == 0 {
		base = time.Second
	}
	backoff := workqueue.NewTypedItemExponentialFailureRateLimiter[string](base, time.Minute)
	q := workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[string]{Name: name})
	changed, cancel := state.Subscribe()
	defer cancel()
	go func() {
		defer q.ShutDown()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-kick:
			}
			q.Add(name)
		}
	}()
	q.Add(name)
	for {
		key, shutdown := q.Get()
		if shutdown {
			return
		}
		if err := sync(ctx); err != nil && ctx.Err() == nil {
			delay := backoff.When(key)
			failed(err, delay)
			q.AddAfter(key, delay)
		} else {
			backoff.Forget(key)
		}
		q.Done(key)
	}
}
