package cluster

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

func sampleMetas() []nodeMeta {
	return []nodeMeta{
		{Serving: ServingReady, CatGen: 1, CatHash: catalogHash(sampleCatalog().Models), HTTPAddr: "10.0.0.7:8080", Class: "cpu"},
		{Leaving: true, Serving: ServingDraining, CatGen: math.MaxUint64, HTTPAddr: "[fe80::1]:8080", Class: "gpu:H100"},
		{Serving: ServingDegraded},
	}
}

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range sampleMetas() {
		got, err := decodeMeta(encodeMeta(m))
		if err != nil {
			t.Fatal(err)
		}
		if got != m {
			t.Errorf("round trip: got %+v, want %+v", got, m)
		}
	}
}

func TestMetaForwardCompatible(t *testing.T) {
	want := sampleMetas()[0]
	b := encodeMeta(want)
	b[0] = metaVersion + 1
	b = append(b, "a field of a later version"...)
	got, err := decodeMeta(b)
	if err != nil || got != want {
		t.Fatalf("a later version's metadata: got %+v, %v; want its version-1 prefix %+v", got, err, want)
	}
	b = encodeMeta(want)
	b[2] = 200 // a serving state this version does not know
	if got, err := decodeMeta(b); err != nil || got.Serving != ServingDegraded {
		t.Fatalf("unknown serving state read as %q, %v; want degraded", got.Serving, err)
	}
	if _, err := decodeMeta(append(encodeMeta(want), 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("version-1 metadata with trailing bytes: %v, want ErrMalformed", err)
	}
	if _, err := decodeMeta([]byte{0, 0, 0}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("version 0: %v, want ErrMalformed", err)
	}
}

// TestMetaSizeLimit checks that validation admits exactly the options whose widest
// metadata fits memberlist's limit, so NodeMeta can never make memberlist panic.
func TestMetaSizeLimit(t *testing.T) {
	// Fixed overhead at the widest: version, flags, serving, 10-byte varint, hash, and two
	// length prefixes (2 bytes each once a field is 128 bytes or longer).
	const overhead = 3 + 10 + hashLen
	cases := []struct {
		name     string
		httpAddr string
		class    string
		ok       bool
	}{
		{"typical", "192.168.1.20:8080", "gpu:H100", true},
		{"address at the limit", strings.Repeat("a", memberlist.MetaMaxSize-overhead-2-1), "", true},
		{"address one over", strings.Repeat("a", memberlist.MetaMaxSize-overhead-2-1+1), "", false},
		{"600-byte address", strings.Repeat("h", 600), "cpu", false},
		{"long class", "10.0.0.1:8080", strings.Repeat("c", 500), false},
		{"both long", strings.Repeat("h", 250), strings.Repeat("c", 250), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Options{Name: "n", Bind: "127.0.0.1:0", HTTPAddr: c.httpAddr, Class: c.class}.validate()
			if c.ok {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				widest := encodeMeta(nodeMeta{Leaving: true, Serving: ServingDegraded, CatGen: math.MaxUint64, HTTPAddr: c.httpAddr, Class: c.class})
				if len(widest) > memberlist.MetaMaxSize {
					t.Fatalf("validation passed but metadata is %d bytes", len(widest))
				}
				if _, err := decodeMeta(widest); err != nil {
					t.Fatalf("widest metadata does not decode: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrMetaTooLarge) {
				t.Fatalf("validate = %v, want ErrMetaTooLarge", err)
			}
		})
	}
}
