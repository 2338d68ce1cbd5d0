package daemon

import (
	"testing"

	"github.com/inferd/inferd/config"
)

func TestBodyBudgetBytes(t *testing.T) {
	cases := []struct {
		name   string
		server config.Server
		mem    uint64
		want   int64
	}{
		{"set", config.Server{MaxBodyBytesInFlight: 5 << 20, MaxRequestBytes: 1 << 20}, 16 << 30, 5 << 20},
		{"a quarter of memory", config.Server{MaxRequestBytes: 64 << 20}, 16 << 30, 4 << 30},
		{"at least one largest body", config.Server{MaxRequestBytes: 1 << 30}, 1 << 30, 1 << 30},
		{"memory unknown", config.Server{MaxRequestBytes: 64 << 20}, 0, 0},
	}
	for _, c := range cases {
		if got := bodyBudgetBytes(c.server, c.mem); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}
