package daemon

import (
	"testing"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/runtime"
)

type runtimeObject = runtime.Object

// zapTee sends logs both to the observer and, under -v, to the test log.
func zapTee(core zapcore.Core, t *testing.T) zapcore.Core {
	return zapcore.NewTee(core, zaptest.NewLogger(t).Core())
}
