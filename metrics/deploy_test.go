package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The deploy counters are read from their source at each scrape, under their documented names.
func TestDeployCollector(t *testing.T) {
	st := DeployStats{FetchedBytes: 100, ServedBytes: 200, CorruptChunks: 3, FailedFetches: 4}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewDeploy(func() DeployStats { return st }))
	read := func() map[string]float64 {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, f := range fams {
			if f.GetType().String() != "COUNTER" || len(f.GetMetric()) != 1 {
				t.Errorf("%s: %s with %d series, want one counter", f.GetName(), f.GetType(), len(f.GetMetric()))
				continue
			}
			out[f.GetName()] = f.GetMetric()[0].GetCounter().GetValue()
		}
		return out
	}
	want := map[string]float64{"inferd_deploy_fetched_bytes_total": 100, "inferd_deploy_served_bytes_total": 200,
		"inferd_deploy_corrupt_chunks_total": 3, "inferd_deploy_failed_fetches_total": 4}
	got := read()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("families %v, want %v", got, want)
	}
	st.CorruptChunks = 5
	if got := read()["inferd_deploy_corrupt_chunks_total"]; got != 5 {
		t.Errorf("after the source changed: %v, want 5", got)
	}
}
