package ort

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/inferd/inferd/internal/testmodels"
)

func TestReadGraphDims(t *testing.T) {
	model := testmodels.MultiIO()
	dir := t.TempDir()
	path := filepath.Join(dir, "m.onnx")
	if err := os.WriteFile(path, model, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readGraphDims(path)
	if err != nil {
		t.Fatal(err)
	}
	dims := []string{"batch", ""}
	want := graphDims{
		inputs:  map[string][]string{"x": dims, "y": dims},
		outputs: map[string][]string{"sum": dims, "twice": dims, "greater": dims, "wide": dims},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readGraphDims =\n %v\nwant\n %v", got, want)
	}

	// Every truncation of a valid model is an error or a partial answer, never a panic or a
	// read past the end.
	for n := range len(model) {
		p := filepath.Join(dir, "cut.onnx")
		if err := os.WriteFile(p, model[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		readGraphDims(p) //nolint:errcheck // only must not panic
	}
}
