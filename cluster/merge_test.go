package cluster

import (
	"errors"
	"slices"
	"testing"
)

func TestCompareRecords(t *testing.T) {
	r := func(gen uint64, prio uint8, data string) Record {
		return Record{Kind: "rollout", Key: "mlp", Generation: gen, Priority: prio, Data: []byte(data)}
	}
	cases := []struct {
		name string
		a, b Record
		want int
	}{
		{"higher generation wins over priority", r(2, 0, "promote"), r(1, 9, "abort"), 1},
		{"abort wins a tie", r(3, 1, "abort"), r(3, 0, "promote"), 1},
		{"data breaks a full tie", r(3, 0, "b"), r(3, 0, "a"), 1},
		{"equal", r(3, 0, "a"), r(3, 0, "a"), 0},
		{"nil and empty data are equal", Record{Generation: 1}, Record{Generation: 1, Data: []byte{}}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := compareRecords(c.a, c.b); got != c.want {
				t.Errorf("compare(a, b) = %d, want %d", got, c.want)
			}
			if got := compareRecords(c.b, c.a); got != -c.want {
				t.Errorf("compare(b, a) = %d, want %d", got, -c.want)
			}
		})
	}
}

// TestRecordMergeOrderIndependent feeds the same records to offline nodes in every order:
// all must end holding the same winner, and putRecord must report the losers as stale.
func TestRecordMergeOrderIndependent(t *testing.T) {
	recs := []Record{
		{Kind: "rollout", Key: "mlp", Generation: 4, Priority: 0, Data: []byte("promote")},
		{Kind: "rollout", Key: "mlp", Generation: 4, Priority: 1, Data: []byte("abort")},
		{Kind: "rollout", Key: "mlp", Generation: 3, Priority: 1, Data: []byte("abort-old")},
		{Kind: "rollout", Key: "mlp", Generation: 4, Priority: 1, Data: []byte("abort-b")},
	}
	want := recs[3]
	perm := []int{0, 1, 2, 3}
	for {
		n := offlineNode(t)
		for _, i := range perm {
			n.mergeRecord(recs[i], false)
		}
		got := n.Records("rollout")
		if len(got) != 1 || compareRecords(got[0], want) != 0 {
			t.Fatalf("order %v: holds %+v, want %+v", perm, got, want)
		}
		if !nextPerm(perm) {
			break
		}
	}
	n := offlineNode(t)
	if err := n.putRecord(recs[1]); err != nil {
		t.Fatal(err)
	}
	if err := n.putRecord(recs[0]); !errors.Is(err, errStaleRecord) {
		t.Fatalf("putRecord of a loser = %v, want errStaleRecord", err)
	}
	if err := n.putRecord(recs[1]); err != nil {
		t.Fatalf("putRecord of the held record = %v, want nil", err)
	}
	if err := n.putRecord(Record{Kind: "", Key: "x"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("putRecord without kind = %v, want ErrInvalid", err)
	}
}

func TestCatalogMerge(t *testing.T) {
	n := offlineNode(t)
	c1 := Catalog{Generation: 5, Models: []CatalogVersion{{Model: "m", Version: "1", State: "ready"}}}
	c0 := Catalog{Generation: 4, Models: []CatalogVersion{{Model: "m", Version: "0", State: "ready"}}}
	n.mergeCatalog("peer", c1, false)
	n.mergeCatalog("peer", c0, false)
	if got := n.catalogs["peer"]; got.Generation != 5 {
		t.Fatalf("older catalog replaced a newer one: %+v", got)
	}
	// A peer holding this node's own catalog at a higher generation (a clock that went back
	// across a restart) pushes this node's generation past it.
	own := n.Members()[0].Catalog.Generation
	n.mergeCatalog(n.Name(), Catalog{Generation: own + 100}, false)
	if got := n.Members()[0].Catalog.Generation; got <= own+100 {
		t.Fatalf("own generation %d not moved past %d", got, own+100)
	}
	if err := n.SetCatalog(Catalog{Models: []CatalogVersion{{Model: string(make([]byte, maxFieldLen+1))}}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetCatalog with an over-long field = %v, want ErrInvalid", err)
	}
}

func offlineNode(t *testing.T) *Node {
	t.Helper()
	cfg, err := Options{Name: "offline", Bind: "127.0.0.1:0"}.validate()
	if err != nil {
		t.Fatal(err)
	}
	return newNode(cfg)
}

// nextPerm advances p to the next lexicographic permutation; false after the last.
func nextPerm(p []int) bool {
	i := len(p) - 2
	for i >= 0 && p[i] >= p[i+1] {
		i--
	}
	if i < 0 {
		return false
	}
	j := len(p) - 1
	for p[j] <= p[i] {
		j--
	}
	p[i], p[j] = p[j], p[i]
	slices.Reverse(p[i+1:])
	return true
}
