package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	m := New("1.2.3")
	m.ConfigReloads.WithLabelValues("failed").Inc()
	m.ConfigLastReloadSuccessful.Set(0)
	m.ModelLoads.WithLabelValues("mlp", "success").Add(2)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`inferd_build_info{goversion="go`,
		`version="1.2.3"} 1`,
		`inferd_config_reloads_total{result="failed"} 1`,
		`inferd_config_last_reload_successful 0`,
		`inferd_model_loads_total{model="mlp",result="success"} 2`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	// A second registry in the same process is independent: no global state.
	other := New("x")
	if other.Registry == m.Registry {
		t.Error("two Metrics share a registry")
	}
}
