package cluster

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestRejoinCandidates(t *testing.T) {
	n := offlineNode(t)
	n.cfg.Join = []string{"10.0.0.1:7946", "10.0.0.2", "10.0.0.3:7946", "seed.example:7946"}
	n.gossipAddr = "10.0.0.9:7946"
	n.bindPort = 7946
	peerAt := func(ip string, l Liveness) *peer {
		return &peer{node: memberlist.Node{Addr: net.ParseIP(ip), Port: 7946}, liveness: l}
	}
	n.peers = map[string]*peer{
		"a": peerAt("10.0.0.1", LivenessAlive),   // a live seed: skipped
		"b": peerAt("10.0.0.2", LivenessSuspect), // suspect counts as live; seed without port matches
		"c": peerAt("10.0.0.4", LivenessDead),    // remembered dead peer: tried
		"d": peerAt("10.0.0.5", LivenessLeft),    // left on purpose: not tried
	}
	got := n.rejoinCandidates()
	want := map[string]bool{"10.0.0.3:7946": true, "seed.example:7946": true, "10.0.0.4:7946": true}
	if len(got) != len(want) {
		t.Fatalf("candidates %v, want %v", got, want)
	}
	for a := range want {
		if !got[a] {
			t.Errorf("candidates %v lack %s", got, a)
		}
	}
}

func TestRejoinBackoff(t *testing.T) {
	n := offlineNode(t)
	n.cfg.RejoinInterval, n.cfg.RejoinMaxInterval = time.Second, 10*time.Second
	for _, c := range []struct {
		fails    int
		min, max time.Duration
	}{
		{1, 1800 * time.Millisecond, 2200 * time.Millisecond},
		{2, 3600 * time.Millisecond, 4400 * time.Millisecond},
		{4, 9 * time.Second, 11 * time.Second},
		{64, 9 * time.Second, 11 * time.Second},
	} {
		for range 50 {
			if d := n.backoff(c.fails); d < c.min || d > c.max {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", c.fails, d, c.min, c.max)
			}
		}
	}
}
