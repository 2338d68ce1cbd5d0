package route

import (
	"net/http"
	"slices"
	"time"

	"github.com/inferd/inferd/cluster"
)

// step is one set of acceptable nodes for a request, tried before the next step.
type step struct {
	need    string // the version a node must have ready; "" any ready version of the model
	rewrite string // the version to pin in the forwarded or local path; "" keeps the path
	node    string // the only acceptable node; "" any
}

// candidate is a node chosen for one try.
type candidate struct {
	name    string
	addr    string
	local   bool
	peer    *peer // nil for the local node
	model   string
	rewrite string
}

// plan yields the nodes of one request in the order they are tried: the split's chosen target
// (local node first, else two random choices), then the other targets with weight in a
// weighted random order, then any node serving a version the split gives weight to (node
// constraints relaxed, so that a dead node costs no request), and, when every one of those is
// ejected or tried, the ejected ones ("panic mode": a peer that is ejected is better than no
// peer at all). A node is tried once per request.
type plan struct {
	rt      *Router
	members []cluster.Member
	model   string
	pinned  string
	now     time.Time

	steps    []step
	idx      int
	targets  []Target // the split's targets with weight, for the steps after the first
	first    int      // index in targets of the chosen one, -1 when no split applies
	extended bool
	panic    bool
	tried    []string
}

// newPlan applies the split: a URL that pins a version uses only the split's node-only
// targets (a version split does not apply to it); otherwise every target with weight counts.
func (rt *Router) newPlan(r *http.Request, members []cluster.Member, model, pinned string) *plan {
	p := &plan{rt: rt, members: members, model: model, pinned: pinned, now: rt.opts.Now(), first: -1}
	var split Split
	ok := false
	if rt.splits != nil {
		split, ok = rt.splits.Split(model)
	}
	if ok {
		for _, t := range split.Targets {
			if units(t.Weight) > 0 && (pinned == "" || t.Version == "" && t.Node != "") {
				p.targets = append(p.targets, t)
			}
		}
	}
	if len(p.targets) == 0 {
		p.steps = []step{{need: pinned}}
		p.extended = true
		return p
	}
	total := totalUnits(p.targets)
	var point int
	if v := stickyValue(r, split.StickyHeader); v != "" {
		point = stickyPoint(v, total)
	} else {
		point = rt.rand.IntN(total)
	}
	p.first = pick(p.targets, point)
	p.steps = []step{p.stepFor(p.targets[p.first])}
	return p
}

func stickyValue(r *http.Request, header string) string {
	if header == "" {
		return ""
	}
	return r.Header.Get(header)
}

func (p *plan) stepFor(t Target) step {
	if p.pinned != "" {
		return step{need: p.pinned, node: t.Node}
	}
	return step{need: t.Version, rewrite: t.Version, node: t.Node}
}

// extend appends the steps after the chosen target: the other targets in weighted random
// order, then the relaxed ones.
func (p *plan) extend() {
	p.extended = true
	rest := slices.Delete(slices.Clone(p.targets), p.first, p.first+1)
	order := []Target{p.targets[p.first]}
	for len(rest) > 0 {
		i := pick(rest, p.rt.rand.IntN(totalUnits(rest)))
		order = append(order, rest[i])
		p.steps = append(p.steps, p.stepFor(rest[i]))
		rest = slices.Delete(rest, i, i+1)
	}
	anyVersion := false
	for _, t := range order {
		if t.Version == "" || p.pinned != "" {
			anyVersion = true
			continue
		}
		s := step{need: t.Version, rewrite: t.Version}
		if !slices.Contains(p.steps, s) {
			p.steps = append(p.steps, s)
		}
	}
	if anyVersion {
		p.steps = append(p.steps, step{need: p.pinned})
	}
}

// next returns the node for the next try, or false when none is left.
func (p *plan) next() (candidate, bool) {
	for {
		for ; p.idx < len(p.steps); p.idx++ {
			if c, ok := p.choose(p.steps[p.idx]); ok {
				p.tried = append(p.tried, c.name)
				return c, true
			}
		}
		switch {
		case !p.extended:
			p.extend()
		case !p.panic:
			p.panic = true
			p.idx = 0
		default:
			return candidate{}, false
		}
	}
}

// choose picks among the step's untried nodes: the local node if it is one of them, else the
// less loaded of two drawn at random.
func (p *plan) choose(s step) (candidate, bool) {
	var buf [8]*cluster.Member
	peers := buf[:0]
	var local *cluster.Member
	for i := range p.members {
		m := &p.members[i]
		if !m.Routable() || s.node != "" && m.Name != s.node || slices.Contains(p.tried, m.Name) ||
			!m.Catalog.Ready(p.model, s.need) {
			continue
		}
		if m.Local || m.Name == p.rt.opts.Node {
			local = m
			continue
		}
		if m.HTTPAddr == "" || !p.panic && p.rt.peerFor(m.Name).ejected(p.now) {
			continue
		}
		peers = append(peers, m)
	}
	if local != nil {
		return candidate{name: local.Name, local: true, model: p.model, rewrite: s.rewrite}, true
	}
	var m *cluster.Member
	switch len(peers) {
	case 0:
		return candidate{}, false
	case 1:
		m = peers[0]
	default:
		i := p.rt.rand.IntN(len(peers))
		j := p.rt.rand.IntN(len(peers) - 1)
		if j >= i {
			j++
		}
		a, b := p.rt.peerFor(peers[i].Name), p.rt.peerFor(peers[j].Name)
		m = peers[i]
		if b.inFlight.Load() < a.inFlight.Load() {
			m = peers[j]
		}
	}
	return candidate{name: m.Name, addr: m.HTTPAddr, peer: p.rt.peerFor(m.Name), model: p.model, rewrite: s.rewrite}, true
}

// listed reports whether any member's catalog lists the model (and the version, if one is
// needed) in any state, and whether the local node's does.
func listed(members []cluster.Member, model, version string) (anywhere, locally bool) {
	for _, m := range members {
		for _, v := range m.Catalog.Models {
			if v.Model == model && (version == "" || v.Version == version) {
				anywhere = true
				locally = locally || m.Local
			}
		}
	}
	return anywhere, locally
}
