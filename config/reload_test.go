package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRestartRequired(t *testing.T) {
	running := Default()
	next := Default()
	next.Server.Listen = "127.0.0.1:9"                  // restart, its own key
	next.Server.MaxRequestBytes = 1                     // live
	next.Server.TLS.CertFile = "cert.pem"               // restart, named by its table
	next.Server.TLS.KeyFile = "key.pem"                 // the same table: named once
	next.Cluster.PolicyFile = "routing.toml"            // live inside a restart table
	next.Cluster.Join = []string{"10.0.0.1:7946"}       // restart, named by its table
	next.GPU.TelemetryTimeout = 3 * time.Second         // restart
	next.Scheduler.MaxQueueDelay = 7 * time.Millisecond // live

	want := []string{"server.listen", "server.tls", "gpu.telemetry_timeout", "cluster"}
	if got := RestartRequired(&running, &next); !slices.Equal(got, want) {
		t.Errorf("RestartRequired = %q, want %q", got, want)
	}
	if got := RestartRequired(&running, &running); len(got) != 0 {
		t.Errorf("RestartRequired of equal configurations = %q", got)
	}

	kept := KeepRestartOnly(&running, &next)
	if got := RestartRequired(&running, kept); len(got) != 0 {
		t.Errorf("after KeepRestartOnly, RestartRequired = %q", got)
	}
	if kept.Server.MaxRequestBytes != 1 || kept.Cluster.PolicyFile != "routing.toml" || kept.Scheduler.MaxQueueDelay != 7*time.Millisecond {
		t.Errorf("KeepRestartOnly lost a live change: %+v", kept)
	}
	if next.Server.Listen != "127.0.0.1:9" || len(next.Cluster.Join) != 1 {
		t.Errorf("KeepRestartOnly changed its argument: %+v", next)
	}
}

// A key's Restart names the key itself, a table above it, or nothing.
func TestRestartKeysNameTheKeyOrItsTable(t *testing.T) {
	for _, k := range Keys() {
		if k.Restart != "" && k.Restart != k.Key && !strings.HasPrefix(k.Key, k.Restart+".") {
			t.Errorf("%s: Restart = %q", k.Key, k.Restart)
		}
	}
}
