package settings

import (
	"reflect"
	"strings"
	"testing"
)

func TestFromData(t *testing.T) {
	cases := []struct {
		name    string
		data    map[string]string
		want    Settings
		wantErr string
	}{
		{name: "empty gives defaults", data: nil, want: Default()},
		{name: "all set", data: map[string]string{
			"deviceSplitCount": "20", "deviceMemoryScaling": "1.5",
			"nodeSchedulerPolicy": "Spread", "gpuSchedulerPolicy": "binpack",
			"unenforcedAction": " Evict",
		}, want: Settings{20, 1.5, Spread, Binpack, Evict}},
		{name: "bad action", data: map[string]string{"unenforcedAction": "kill"}, wantErr: `setting unenforcedAction: action "kill": must be "report" or "evict"`},
		{name: "fragmentation", data: map[string]string{
			"nodeSchedulerPolicy": "Fragmentation", "gpuSchedulerPolicy": "fragmentation",
		}, want: Settings{Default().DeviceSplitCount, Default().DeviceMemoryScaling, Fragmentation, Fragmentation, Default().UnenforcedAction}},
		{name: "split zero", data: map[string]string{"deviceSplitCount": "0"}, wantErr: "deviceSplitCount=\"0\": must be an integer from 1 to 1000"},
		{name: "scaling below one", data: map[string]string{"deviceMemoryScaling": "0.5"}, wantErr: "must be a number from 1 to 100"},
		{name: "bad policy", data: map[string]string{"gpuSchedulerPolicy": "random"}, wantErr: `policy "random": must be "binpack", "spread" or "fragmentation"`},
		{name: "typo", data: map[string]string{"deviceSplitcount": "4"}, wantErr: `setting "deviceSplitcount" is unknown`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromData(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			back, err := FromData(got.Data())
			if err != nil || !reflect.DeepEqual(back, got) {
				t.Fatalf("Data() does not round-trip: %+v, %v", back, err)
			}
		})
	}
}
