package rollout

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/cluster"
)

func sampleState() State {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return State{
		Model: "resnet", Stable: "1", Canary: "2", DefinitionHash: "0123456789abcdef", Step: 2,
		CanaryWeight: 12.5, Phase: PhaseProgressing, Reason: "analysis: 100 requests", Generation: 7,
		Updated: t0.Add(time.Minute), StepStarted: t0, Passed: 1, Failed: 1, Inconclusive: 3, By: "node-a",
	}
}

func TestRecordRoundTrip(t *testing.T) {
	st := sampleState()
	rec, err := EncodeRecord(st, PriorityAbort)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Kind != RecordKind || rec.Key != "resnet" || rec.Generation != 7 || rec.Priority != PriorityAbort {
		t.Errorf("record %+v", rec)
	}
	got, err := DecodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Updated.Equal(st.Updated) || !got.StepStarted.Equal(st.StepStarted) {
		t.Errorf("times %v %v, want %v %v", got.Updated, got.StepStarted, st.Updated, st.StepStarted)
	}
	got.Updated, got.StepStarted = st.Updated, st.StepStarted
	if got != st {
		t.Errorf("decoded %+v\nwant    %+v", got, st)
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	good, err := EncodeRecord(sampleState(), 0)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(from, to string) cluster.Record {
		r := good
		if !bytes.Contains(r.Data, []byte(from)) {
			t.Fatalf("%s not in %s", from, r.Data)
		}
		r.Data = bytes.Replace(r.Data, []byte(from), []byte(to), 1)
		return r
	}
	tests := []struct {
		name string
		rec  cluster.Record
		want string // in the message
	}{
		{"other kind", cluster.Record{Kind: "catalog", Key: "resnet", Generation: 7, Data: good.Data}, "kind"},
		{"other key", cluster.Record{Kind: RecordKind, Key: "bert", Generation: 7, Data: good.Data}, "carries model"},
		{"other generation", cluster.Record{Kind: RecordKind, Key: "resnet", Generation: 8, Data: good.Data}, "generation"},
		{"empty", cluster.Record{Kind: RecordKind, Key: "resnet", Generation: 7}, "EOF"},
		{"not JSON", cluster.Record{Kind: RecordKind, Key: "resnet", Generation: 7, Data: []byte("\x00\x01")}, "invalid character"},
		{"trailing data", cluster.Record{Kind: RecordKind, Key: "resnet", Generation: 7, Data: append(bytes.Clone(good.Data), " {}"...)}, "after the JSON"},
		{"too big", cluster.Record{Kind: RecordKind, Key: "resnet", Generation: 7, Data: make([]byte, maxRecordBytes+1)}, "bytes"},
		{"future version", edit(`"v":1`, `"v":2`), "format version 2"},
		{"unknown phase", edit(`"progressing"`, `"winning"`), "unknown phase"},
		{"weight over 100", edit(`"weight":12.5`, `"weight":100.5`), "outside 0..100"},
		{"negative weight", edit(`"weight":12.5`, `"weight":-1`), "outside 0..100"},
		{"negative step", edit(`"step":2`, `"step":-2`), "step -2"},
		{"huge step", edit(`"step":2`, `"step":100`), "step 100"},
		{"short hash", edit(`"0123456789abcdef"`, `"0123"`), "hex"},
		{"upper-case hash", edit(`"0123456789abcdef"`, `"0123456789ABCDEF"`), "hex"},
		{"same versions", edit(`"canary":"2"`, `"canary":"1"`), "both"},
		{"no canary", edit(`"canary":"2"`, `"canary":""`), "canary"},
		{"aborted with traffic", edit(`"progressing"`, `"aborted"`), "aborted with canary weight"},
		{"completed short of 100", edit(`"progressing"`, `"completed"`), "completed with canary weight"},
		{"negative count", edit(`"failed":1`, `"failed":-1`), "negative"},
		{"bad time", edit(`"updated":"2025`, `"updated":"x2025`), "cannot parse"},
		{"wrong type", edit(`"step":2`, `"step":"2"`), "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRecord(tt.rec)
			if !errors.Is(err, ErrBadRecord) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("DecodeRecord = %v, want ErrBadRecord mentioning %q", err, tt.want)
			}
		})
	}
}

func TestEncodeRecordRejects(t *testing.T) {
	st := sampleState()
	st.Phase = PhaseAborted
	if _, err := EncodeRecord(st, PriorityAbort); err == nil {
		t.Error("encoded an aborted state with canary traffic")
	}
	st = sampleState()
	st.Reason = strings.Repeat("é", maxReasonBytes) // cut to fit, on a rune boundary
	rec, err := EncodeRecord(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeRecord(rec); err != nil || len(got.Reason) != maxReasonBytes {
		t.Errorf("reason of %d bytes, err %v", len(got.Reason), err)
	}
}

// The merge rule: newest generation, then priority (abort over promote over progress).
func TestWins(t *testing.T) {
	r := func(gen uint64, prio uint8, data string) cluster.Record {
		return cluster.Record{Kind: RecordKind, Key: "m", Generation: gen, Priority: prio, Data: []byte(data)}
	}
	tests := []struct {
		a, b cluster.Record
		want bool
	}{
		{r(2, 0, "a"), r(1, 2, "z"), true},
		{r(1, PriorityAbort, "a"), r(1, PriorityOperator, "z"), true},
		{r(1, PriorityOperator, "a"), r(1, PriorityProgress, "z"), true},
		{r(1, 0, "b"), r(1, 0, "a"), true},
		{r(1, 0, "a"), r(1, 0, "a"), false},
	}
	for _, tt := range tests {
		if got := wins(tt.a, tt.b); got != tt.want {
			t.Errorf("wins(%d/%d/%s, %d/%d/%s) = %v", tt.a.Generation, tt.a.Priority, tt.a.Data, tt.b.Generation, tt.b.Priority, tt.b.Data, got)
		}
		if tt.want && wins(tt.b, tt.a) {
			t.Errorf("both records win")
		}
	}
}

// FuzzDecodeRecord feeds arbitrary records to DecodeRecord: it must not panic, and whatever it
// accepts must encode again and decode to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	good, err := EncodeRecord(sampleState(), 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("resnet", uint64(7), good.Data)
	f.Fuzz(func(t *testing.T, key string, gen uint64, data []byte) {
		st, err := DecodeRecord(cluster.Record{Kind: RecordKind, Key: key, Generation: gen, Data: data})
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("error %v does not wrap ErrBadRecord", err)
			}
			return
		}
		r1, err := EncodeRecord(st, 0)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", data, err)
		}
		st2, err := DecodeRecord(r1)
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", r1.Data, err)
		}
		r2, err := EncodeRecord(st2, 0)
		if err != nil || !bytes.Equal(r1.Data, r2.Data) {
			t.Fatalf("not stable: %q then %q (%v)", r1.Data, r2.Data, err)
		}
	})
}
