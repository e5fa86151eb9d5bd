package logging

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"
)

func TestLevelFlag(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want zapcore.Level
		bad  bool
	}{
		{arg: "", want: zapcore.InfoLevel},
		{arg: "--log-level=debug", want: zapcore.DebugLevel},
		{arg: "--log-level=warn", want: zapcore.WarnLevel},
		{arg: "--log-level=loud", bad: true},
		{arg: "--log-level=fatal", bad: true},
	} {
		var o Options
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		o.AddFlags(fs)
		var args []string
		if tc.arg != "" {
			args = []string{tc.arg}
		}
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		log, err := o.Build()
		if tc.bad {
			if err == nil || !strings.Contains(err.Error(), "must be debug, info, warn or error") {
				t.Errorf("%s: error %v, want one naming the allowed levels", tc.arg, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.arg, err)
		}
		if !log.Core().Enabled(tc.want) || (tc.want > zapcore.DebugLevel && log.Core().Enabled(tc.want-1)) {
			t.Errorf("%s: logger not at %v", tc.arg, tc.want)
		}
	}
}
