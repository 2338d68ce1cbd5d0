package rollout

import (
	"testing"

	"github.com/inferd/inferd/cluster"
)

func TestLowestRoutable(t *testing.T) {
	m := func(name string, local bool, l cluster.Liveness, s cluster.Serving) cluster.Member {
		return cluster.Member{Name: name, Local: local, Liveness: l, Serving: s}
	}
	alive, ready := cluster.LivenessAlive, cluster.ServingReady
	tests := []struct {
		name    string
		members []cluster.Member
		want    bool
	}{
		{"alone", []cluster.Member{m("b", true, alive, ready)}, true},
		{"lowest", []cluster.Member{m("c", false, alive, ready), m("a", true, alive, ready), m("b", false, alive, ready)}, true},
		{"not lowest", []cluster.Member{m("a", false, alive, ready), m("b", true, alive, ready)}, false},
		{"lower one dead", []cluster.Member{m("a", false, cluster.LivenessDead, ready), m("b", true, alive, ready)}, true},
		{"lower one draining", []cluster.Member{m("a", false, alive, cluster.ServingDraining), m("b", true, alive, ready)}, true},
		{"lower one degraded still leads", []cluster.Member{m("a", false, alive, cluster.ServingDegraded), m("b", true, alive, ready)}, false},
		{"self draining", []cluster.Member{m("a", true, alive, cluster.ServingDraining), m("b", false, alive, ready)}, false},
		{"no local entry", []cluster.Member{m("a", false, alive, ready)}, false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		if got := LowestRoutable(tt.members); got != tt.want {
			t.Errorf("%s: LowestRoutable = %v, want %v", tt.name, got, tt.want)
		}
		if got := MembersLeader(func() []cluster.Member { return tt.members }).IsLeader(); got != tt.want {
			t.Errorf("%s: MembersLeader = %v", tt.name, got)
		}
	}
}
