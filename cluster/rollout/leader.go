package rollout

import "github.com/inferd/inferd/cluster"

// Leader says whether this node advances rollouts. IsLeader is called with the Controller's
// lock held: it must not block and must not call the Controller.
type Leader interface {
	IsLeader() bool
}

// LeaderFunc adapts a function to Leader.
type LeaderFunc func() bool

// IsLeader calls f.
func (f LeaderFunc) IsLeader() bool { return f() }

// LowestRoutable is the leader rule: it reports whether the local member is routable and has the
// lowest Name among the routable members. Names are stable node ids from config, so the choice
// does not move with addresses or restarts; a draining leader hands over before it leaves.
func LowestRoutable(members []cluster.Member) bool {
	local, lowest := "", ""
	for _, m := range members {
		if !m.Routable() {
			continue
		}
		if m.Local {
			local = m.Name
		}
		if lowest == "" || m.Name < lowest {
			lowest = m.Name
		}
	}
	return local != "" && local == lowest
}

// MembersLeader is a Leader that applies LowestRoutable to the membership view members returns.
func MembersLeader(members func() []cluster.Member) Leader {
	return LeaderFunc(func() bool { return LowestRoutable(members()) })
}
