package app

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestDRASchedulerNameNeedsDRAModeAndAName(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Mode: ModeExtender, DRASchedulerName: "gpu-dra"}, "only with --mode=dra"},
		{Options{Mode: ModeDRA, DRASchedulerName: "GPU DRA"}, "must be a scheduler name"},
	} {
		err := Run(context.Background(), tc.o, zap.NewNop())
		if err == nil || !strings.Contains(err.Error(), "--dra-scheduler-name") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v: want an error naming --dra-scheduler-name, %q", tc.o, err, tc.want)
		}
	}
}
