package cluster

import (
	"errors"
	"fmt"
	"math"

	"github.com/hashicorp/memberlist"
)

// Node metadata rides in every memberlist alive message, so it is small and fixed in shape:
//
//	byte 0  metaVersion
//	byte 1  flags (metaLeaving)
//	byte 2  serving state (servingCode)
//	uvarint catalog generation
//	8 bytes short catalog hash
//	uvarint length + HTTP address
//	uvarint length + hardware class
//
// A later version may only append fields: a decoder reads the version-1 prefix of any
// version ≥ 1 and ignores the rest, so a rolling upgrade keeps old nodes routing to new ones.
// memberlist panics on metadata over memberlist.MetaMaxSize (512 bytes); Start rejects options
// whose largest possible metadata would exceed it, with ErrMetaTooLarge.

const metaVersion = 1

const metaLeaving = 1 << 0 // the node has begun a graceful leave

// ErrMetaTooLarge means the node's metadata (mostly its HTTP address and class) would not fit
// in memberlist's 512-byte limit.
var ErrMetaTooLarge = errors.New("cluster: node metadata too large")

// nodeMeta is the decoded metadata of a node.
type nodeMeta struct {
	Leaving  bool
	Serving  Serving
	CatGen   uint64
	CatHash  [hashLen]byte
	HTTPAddr string
	Class    string
}

// servingCode is the metadata byte of a serving state; false for an unknown state.
func servingCode(s Serving) (byte, bool) {
	switch s {
	case ServingReady:
		return 0, true
	case ServingDraining:
		return 1, true
	case ServingDegraded:
		return 2, true
	}
	return 0, false
}

// servingOf is the inverse of servingCode. A code this version does not know reads as
// degraded, so a newer peer's new state is never mistaken for ready.
func servingOf(code byte) Serving {
	switch code {
	case 0:
		return ServingReady
	case 1:
		return ServingDraining
	}
	return ServingDegraded
}

func encodeMeta(m nodeMeta) []byte {
	e := encoder{b: make([]byte, 0, 32+len(m.HTTPAddr)+len(m.Class))}
	e.byte(metaVersion)
	var flags byte
	if m.Leaving {
		flags |= metaLeaving
	}
	e.byte(flags)
	code, _ := servingCode(m.Serving)
	e.byte(code)
	e.uvarint(m.CatGen)
	e.b = append(e.b, m.CatHash[:]...)
	e.str(m.HTTPAddr)
	e.str(m.Class)
	return e.b
}

// checkMetaSize reports, with ErrMetaTooLarge, whether metadata with these fixed fields could
// ever exceed memberlist's limit (the variable fields at their widest).
func checkMetaSize(httpAddr, class string) error {
	widest := encodeMeta(nodeMeta{Leaving: true, Serving: ServingDegraded, CatGen: math.MaxUint64, HTTPAddr: httpAddr, Class: class})
	if len(widest) > memberlist.MetaMaxSize {
		return fmt.Errorf("%w: %d bytes (HTTP address %d bytes, class %d bytes), limit %d",
			ErrMetaTooLarge, len(widest), len(httpAddr), len(class), memberlist.MetaMaxSize)
	}
	return nil
}

// decodeMeta parses a peer's metadata.
func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if len(b) > memberlist.MetaMaxSize {
		return m, fmt.Errorf("%w: metadata of %d bytes", ErrMalformed, len(b))
	}
	d := decoder{b: b}
	v := d.byte()
	if d.err == nil && v < metaVersion {
		return m, fmt.Errorf("%w: metadata version %d", ErrMalformed, v)
	}
	flags := d.byte()
	code := d.byte()
	m.CatGen = d.uvarint()
	m.CatHash = d.hash()
	m.HTTPAddr = d.str("http address", memberlist.MetaMaxSize)
	m.Class = d.str("class", memberlist.MetaMaxSize)
	if d.err != nil {
		return nodeMeta{}, d.err
	}
	if v == metaVersion && len(d.b) != 0 {
		return nodeMeta{}, fmt.Errorf("%w: %d trailing metadata bytes", ErrMalformed, len(d.b))
	}
	m.Leaving = flags&metaLeaving != 0
	m.Serving = servingOf(code)
	return m, nil
}
