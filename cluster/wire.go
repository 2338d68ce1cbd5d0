package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Gossip payloads (user messages, broadcasts, push-pull state) share one framing:
//
//	byte 0  wire format version (wireVersion)
//	byte 1  message type
//	...     fields: strings and byte slices as uvarint length + bytes, integers as uvarint
//
// Every length and count is checked against a limit before anything is allocated, and a
// message must be consumed exactly: trailing bytes are an error. Decoding never panics on
// any input (FuzzDecodeMessage holds it to that).

const wireVersion = 1

type msgType byte

const (
	msgCatalog       msgType = 1 // a node's full catalog
	msgCatalogNotice msgType = 2 // a node's catalog changed; fetch it from Holder
	msgRecord        msgType = 3 // one record
	msgRecordNotice  msgType = 4 // a record changed; fetch it from Holder
	msgPing          msgType = 5 // direct liveness probe (this package's, not memberlist's)
	msgAck           msgType = 6 // answer to msgPing
	msgFetch         msgType = 7 // ask a holder to send a catalog or record reliably
	msgState         msgType = 8 // push-pull: every catalog and record the sender holds
)

// Limits on decoded data. They bound what a peer can make this node allocate.
const (
	maxNameLen       = 128       // node names
	maxFieldLen      = 255       // model, version, state, provider, record kind and key, class
	maxRecordData    = 64 << 10  // Record.Data
	maxCatalogModels = 4096      // versions in one catalog
	maxStateItems    = 4096      // catalogs or records in one push-pull state
	maxStateBytes    = 16 << 20  // LocalState stops adding items past this
	hashLen          = 8         // short content hash in notices and metadata
	maxMessageLen    = 256 << 20 // absolute cap on any payload handed to decodeMessage
)

// Errors of the wire codec. Decoding errors wrap ErrMalformed.
var (
	ErrMalformed = errors.New("cluster: malformed gossip message")
)

// fetchWhat says what a msgFetch asks for.
type fetchWhat byte

const (
	fetchCatalog fetchWhat = 1
	fetchRecord  fetchWhat = 2
)

// message is the decoded form of any gossip payload. Only the fields of its Type are set.
type message struct {
	Type msgType

	Owner   string  // msgCatalog, msgCatalogNotice: whose catalog
	Catalog Catalog // msgCatalog

	Record Record // msgRecord; msgRecordNotice uses Kind, Key, Generation, Priority

	Holder string        // notices: a node that has the full item
	Hash   [hashLen]byte // notices: short hash of the item's content

	From string // msgPing, msgAck, msgFetch: the sender's node name
	Seq  uint64 // msgPing, msgAck

	What fetchWhat // msgFetch
	A, B string    // msgFetch: owner (catalog) or kind and key (record)

	Catalogs []ownedCatalog // msgState
	Records  []Record       // msgState
}

// ownedCatalog is a catalog together with the node it belongs to.
type ownedCatalog struct {
	Owner   string
	Catalog Catalog
}

// ---- encoding ----

type encoder struct{ b []byte }

func (e *encoder) byte(v byte)      { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }

func (e *encoder) catalog(c Catalog) {
	e.uvarint(c.Generation)
	e.catalogModels(c.Models)
}

func (e *encoder) catalogModels(models []CatalogVersion) {
	e.uvarint(uint64(len(models)))
	for _, v := range models {
		e.str(v.Model)
		e.str(v.Version)
		e.str(v.State)
		e.str(v.Provider)
	}
}

func (e *encoder) record(r Record) {
	e.str(r.Kind)
	e.str(r.Key)
	e.uvarint(r.Generation)
	e.byte(r.Priority)
	e.bytes(r.Data)
}

// encodeMessage frames m. It does not validate limits: values come from this node, whose
// inputs were validated where they entered (SetCatalog, PutRecord, Start).
func encodeMessage(m *message) []byte {
	e := encoder{b: make([]byte, 0, 64)}
	e.byte(wireVersion)
	e.byte(byte(m.Type))
	switch m.Type {
	case msgCatalog:
		e.str(m.Owner)
		e.catalog(m.Catalog)
	case msgCatalogNotice:
		e.str(m.Owner)
		e.uvarint(m.Catalog.Generation)
		e.b = append(e.b, m.Hash[:]...)
		e.str(m.Holder)
	case msgRecord:
		e.record(m.Record)
	case msgRecordNotice:
		e.str(m.Record.Kind)
		e.str(m.Record.Key)
		e.uvarint(m.Record.Generation)
		e.byte(m.Record.Priority)
		e.b = append(e.b, m.Hash[:]...)
		e.str(m.Holder)
	case msgPing, msgAck:
		e.str(m.From)
		e.uvarint(m.Seq)
	case msgFetch:
		e.str(m.From)
		e.byte(byte(m.What))
		e.str(m.A)
		e.str(m.B)
	case msgState:
		e.uvarint(uint64(len(m.Catalogs)))
		for _, c := range m.Catalogs {
			e.str(c.Owner)
			e.catalog(c.Catalog)
		}
		e.uvarint(uint64(len(m.Records)))
		for _, r := range m.Records {
			e.record(r)
		}
	}
	return e.b
}

// ---- decoding ----

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) raw(n int, what string, limit int) []byte {
	if d.err != nil {
		return nil
	}
	if n > limit {
		d.fail("%s: length %d over limit %d", what, n, limit)
		return nil
	}
	if n > len(d.b) {
		d.fail("%s: truncated", what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) length(what string, limit int) int {
	v := d.uvarint()
	if d.err == nil && v > uint64(limit) {
		d.fail("%s: length %d over limit %d", what, v, limit)
		return 0
	}
	return int(v)
}

func (d *decoder) str(what string, limit int) string {
	n := d.length(what, limit)
	return string(d.raw(n, what, limit))
}

func (d *decoder) bytes(what string, limit int) []byte {
	n := d.length(what, limit)
	p := d.raw(n, what, limit)
	if len(p) == 0 {
		return nil
	}
	return bytes.Clone(p)
}

func (d *decoder) hash() (h [hashLen]byte) {
	copy(h[:], d.raw(hashLen, "hash", hashLen))
	return h
}

// count reads an item count, bounded by limit and by what the remaining bytes could hold
// at minSize bytes an item, so a forged count cannot make the caller allocate.
func (d *decoder) count(what string, limit, minSize int) int {
	n := d.length(what, limit)
	if d.err == nil && n*minSize > len(d.b) {
		d.fail("%s: count %d exceeds remaining %d bytes", what, n, len(d.b))
		return 0
	}
	return n
}

func (d *decoder) catalog() Catalog {
	var c Catalog
	c.Generation = d.uvarint()
	n := d.count("catalog models", maxCatalogModels, 4)
	if n > 0 {
		c.Models = make([]CatalogVersion, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		c.Models = append(c.Models, CatalogVersion{
			Model:    d.str("model", maxFieldLen),
			Version:  d.str("version", maxFieldLen),
			State:    d.str("state", maxFieldLen),
			Provider: d.str("provider", maxFieldLen),
		})
	}
	return c
}

func (d *decoder) record() Record {
	return Record{
		Kind:       d.str("record kind", maxFieldLen),
		Key:        d.str("record key", maxFieldLen),
		Generation: d.uvarint(),
		Priority:   d.byte(),
		Data:       d.bytes("record data", maxRecordData),
	}
}

// decodeMessage parses one gossip payload. Any input that is not a well-formed message of
// a known version and type yields an error wrapping ErrMalformed; it never panics.
func decodeMessage(buf []byte) (*message, error) {
	if len(buf) > maxMessageLen {
		return nil, fmt.Errorf("%w: %d bytes over limit", ErrMalformed, len(buf))
	}
	d := decoder{b: buf}
	if v := d.byte(); d.err == nil && v != wireVersion {
		return nil, fmt.Errorf("%w: wire version %d, want %d", ErrMalformed, v, wireVersion)
	}
	m := &message{Type: msgType(d.byte())}
	if d.err != nil {
		return nil, d.err
	}
	switch m.Type {
	case msgCatalog:
		m.Owner = d.str("owner", maxNameLen)
		m.Catalog = d.catalog()
	case msgCatalogNotice:
		m.Owner = d.str("owner", maxNameLen)
		m.Catalog.Generation = d.uvarint()
		m.Hash = d.hash()
		m.Holder = d.str("holder", maxNameLen)
	case msgRecord:
		m.Record = d.record()
	case msgRecordNotice:
		m.Record.Kind = d.str("record kind", maxFieldLen)
		m.Record.Key = d.str("record key", maxFieldLen)
		m.Record.Generation = d.uvarint()
		m.Record.Priority = d.byte()
		m.Hash = d.hash()
		m.Holder = d.str("holder", maxNameLen)
	case msgPing, msgAck:
		m.From = d.str("from", maxNameLen)
		m.Seq = d.uvarint()
	case msgFetch:
		m.From = d.str("from", maxNameLen)
		m.What = fetchWhat(d.byte())
		m.A = d.str("fetch key", maxFieldLen)
		m.B = d.str("fetch key", maxFieldLen)
		if d.err == nil && m.What != fetchCatalog && m.What != fetchRecord {
			d.fail("fetch of unknown kind %d", m.What)
		}
	case msgState:
		n := d.count("state catalogs", maxStateItems, 3)
		for i := 0; i < n && d.err == nil; i++ {
			m.Catalogs = append(m.Catalogs, ownedCatalog{Owner: d.str("owner", maxNameLen), Catalog: d.catalog()})
		}
		n = d.count("state records", maxStateItems, 5)
		for i := 0; i < n && d.err == nil; i++ {
			m.Records = append(m.Records, d.record())
		}
	default:
		return nil, fmt.Errorf("%w: unknown message type %d", ErrMalformed, m.Type)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	return m, nil
}

// ---- content hashes ----

// catalogHash is a short hash of a catalog's content (not its generation): peers compare it
// with the hash in the owner's metadata to tell whether the catalog they hold is current.
func catalogHash(models []CatalogVersion) [hashLen]byte {
	e := encoder{}
	e.catalogModels(models)
	return shortHash(e.b)
}

// recordHash is a short hash of a record's data, sent in record notices.
func recordHash(r Record) [hashLen]byte { return shortHash(r.Data) }

func shortHash(b []byte) (h [hashLen]byte) {
	sum := sha256.Sum256(b)
	copy(h[:], sum[:hashLen])
	return h
}
