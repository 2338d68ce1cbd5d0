package worker

import (
	"bytes"
	"testing"

	"github.com/inferd/inferd/tensor"
)

// Outputs ONNX Runtime wrote into placed memory keep their place, even when a later placement
// grew (and so mapped again) the arena; the others are copied in after them; the daemon's
// view reads every one back.
func TestPackPlacedOutputs(t *testing.T) {
	a, err := newArena("pack", 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	pl := outputPlace{a: a, next: 100}
	first := pl.place("first", 12)
	copy(first, "placed first")
	second := pl.place("second", 3<<20) // past initialArena: the arena is mapped again
	if len(a.retired) == 0 {
		t.Fatal("the arena did not grow")
	}
	for i := range second {
		second[i] = byte(i % 251)
	}
	declined := pl.place("too big", 1<<30)
	if declined != nil {
		t.Error("a placement over the arena's limit was given memory")
	}
	ts := []tensor.Tensor{
		{Name: "copied", DataType: tensor.Uint8, Shape: []int64{5}, Data: []byte("hello")},
		{Name: "first", DataType: tensor.Uint8, Shape: []int64{12}, Data: first},
		{Name: "second", DataType: tensor.Uint8, Shape: []int64{3 << 20}, Data: second},
		{Name: "strings", DataType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{[]byte("s")}},
	}
	slots, err := pack(a, pl.next, ts, nil, pl.placed)
	if err != nil {
		t.Fatal(err)
	}
	if slots[1].off != alignUp(100) || slots[2].off != pl.placed[1].off {
		t.Errorf("placed outputs moved: slots %+v, placed %+v", slots, pl.placed)
	}
	if slots[0].off < pl.next || slots[3].off < slots[0].off+5 {
		t.Errorf("copied outputs overlap the placed ones: slots %+v, placed up to %d", slots, pl.next)
	}
	view, err := openArena(a.fd, 64<<20) // the daemon's mapping of the same memory
	if err != nil {
		t.Fatal(err)
	}
	view.fd = -1 // a's to close
	defer view.close()
	back, err := unpack(view, slots, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ts[:3] {
		if !bytes.Equal(back[i].Data, ts[i].Data) {
			t.Errorf("%s: read back %d bytes that differ", ts[i].Name, len(back[i].Data))
		}
	}
	if len(back[3].Strings) != 1 || string(back[3].Strings[0]) != "s" {
		t.Errorf("strings: %q", back[3].Strings)
	}
}
