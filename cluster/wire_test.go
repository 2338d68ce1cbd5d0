package cluster

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the committed fuzz seed corpora under testdata/fuzz")

func sampleCatalog() Catalog {
	return Catalog{Generation: 1_700_000_000_000_001, Models: []CatalogVersion{
		{Model: "mlp", Version: "1", State: "ready", Provider: "cpu"},
		{Model: "mlp", Version: "2", State: "loading"},
		{Model: "ocr-cls", Version: "3", State: "ready", Provider: "cuda:0"},
	}}
}

// sampleMessages is one well-formed message of every type.
func sampleMessages() []*message {
	rec := Record{Kind: "rollout", Key: "mlp", Generation: 7, Priority: 1, Data: []byte(`{"step":2}`)}
	return []*message{
		{Type: msgCatalog, Owner: "node-a", Catalog: sampleCatalog()},
		{Type: msgCatalog, Owner: "node-b"},
		{Type: msgCatalogNotice, Owner: "node-a", Catalog: Catalog{Generation: 9}, Hash: catalogHash(sampleCatalog().Models), Holder: "node-c"},
		{Type: msgRecord, Record: rec},
		{Type: msgRecordNotice, Record: Record{Kind: "rollout", Key: "mlp", Generation: 8}, Hash: recordHash(rec), Holder: "node-a"},
		{Type: msgPing, From: "node-a", Seq: 42},
		{Type: msgAck, From: "node-b", Seq: 42},
		{Type: msgFetch, From: "node-a", What: fetchCatalog, A: "node-b"},
		{Type: msgFetch, From: "node-a", What: fetchRecord, A: "rollout", B: "mlp"},
		{Type: msgState, Catalogs: []ownedCatalog{{"node-a", sampleCatalog()}, {"node-b", Catalog{Generation: 3}}}, Records: []Record{rec, {Kind: "k", Key: "x"}}},
		{Type: msgState},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b := encodeMessage(m)
		got, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("type %d: %v", m.Type, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("type %d: round trip\n got %+v\nwant %+v", m.Type, got, m)
		}
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	valid := encodeMessage(&message{Type: msgCatalog, Owner: "a", Catalog: sampleCatalog()})
	hugeCount := []byte{wireVersion, byte(msgCatalog), 1, 'a', 1, 0xff, 0xff, 0xff, 0xff, 0x0f}
	longName := append([]byte{wireVersion, byte(msgPing)}, encodeMessage(&message{Type: msgPing, From: strings.Repeat("x", maxNameLen+1)})[2:]...)
	bigData := encodeMessage(&message{Type: msgRecord, Record: Record{Kind: "k", Key: "k", Data: make([]byte, maxRecordData+1)}})
	cases := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"version only", []byte{wireVersion}},
		{"unknown version", append([]byte{wireVersion + 1}, valid[1:]...)},
		{"unknown type", []byte{wireVersion, 0xee}},
		{"type zero", []byte{wireVersion, 0}},
		{"truncated", valid[:len(valid)-3]},
		{"trailing byte", append(bytes.Clone(valid), 0)},
		{"count beyond bytes", hugeCount},
		{"name over limit", longName},
		{"record data over limit", bigData},
		{"bad varint", []byte{wireVersion, byte(msgPing), 1, 'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"fetch of unknown kind", encodeMessage(&message{Type: msgFetch, From: "a", What: 9})},
		{"notice hash truncated", encodeMessage(&message{Type: msgCatalogNotice, Owner: "a"})[:6]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := decodeMessage(c.in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("decodeMessage = %+v, %v; want ErrMalformed", m, err)
			}
		})
	}
}

// FuzzDecodeMessage holds the gossip decoder, and the delegate callbacks that feed it, to:
// no panic on any input; errors wrap ErrMalformed; a decoded message re-encodes to the same
// message. Seeds: testdata/fuzz/FuzzDecodeMessage (regenerate with -update-corpus).
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(encodeMessage(m))
	}
	cfg, err := Options{Name: "fuzz", Bind: "127.0.0.1:0"}.validate()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// A fresh node per input keeps the target stateless, so coverage (and minimization)
		// depends on the input alone. Offline: no memberlist and no peers, so nothing is sent.
		n := newNode(cfg)
		h := &hooks{n}
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
		} else {
			again, err := decodeMessage(encodeMessage(m))
			if err != nil {
				t.Fatalf("re-encoded message does not decode: %v", err)
			}
			if !reflect.DeepEqual(again, m) {
				t.Fatalf("round trip changed the message:\n%+v\n%+v", m, again)
			}
		}
		h.NotifyMsg(b)
		h.MergeRemoteState(b, false)
		_ = n.Members()
	})
}

func FuzzDecodeMeta(f *testing.F) {
	for _, m := range sampleMetas() {
		f.Add(encodeMeta(m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if _, ok := servingCode(m.Serving); !ok {
			t.Fatalf("decoded an unknown serving state %q", m.Serving)
		}
	})
}

// TestUpdateFuzzCorpus rewrites the committed seed corpora when run with -update-corpus.
func TestUpdateFuzzCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite testdata/fuzz")
	}
	write := func(target string, seeds [][]byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, b := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var msgs [][]byte
	for _, m := range sampleMessages() {
		msgs = append(msgs, encodeMessage(m))
	}
	big := encodeMessage(&message{Type: msgState, Catalogs: []ownedCatalog{{"n", sampleCatalog()}}})
	msgs = append(msgs, big[:len(big)/2], []byte{wireVersion, byte(msgState), 0xff, 0xff, 0x03}, []byte{0, 0, 0})
	write("FuzzDecodeMessage", msgs)
	var metas [][]byte
	for _, m := range sampleMetas() {
		metas = append(metas, encodeMeta(m))
	}
	metas = append(metas, append(encodeMeta(sampleMetas()[0]), 1, 2, 3), []byte{2, 0, 9})
	write("FuzzDecodeMeta", metas)
}
