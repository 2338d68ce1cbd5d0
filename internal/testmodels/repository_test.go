package testmodels

import (
	"bytes"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// onnxFiles returns the model.onnx files under dir by their slash-separated path relative to it.
func onnxFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "model.onnx" {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)], err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestCommittedDemoRepository fails when configs/models drifts from WriteRepository; fix it with
// `go run ./internal/testmodels/cmd/gendemo`.
func TestCommittedDemoRepository(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	if err := WriteRepository(tmp); err != nil {
		t.Fatal(err)
	}
	want := onnxFiles(t, tmp)
	got := onnxFiles(t, filepath.Join(root, "configs", "models"))
	if len(want) == 0 {
		t.Fatal("WriteRepository wrote no model.onnx files")
	}
	names := slices.Sorted(maps.Keys(want))
	for name := range got {
		if want[name] == nil {
			names = append(names, name)
		}
	}
	for _, name := range names {
		switch w, g := want[name], got[name]; {
		case g == nil:
			t.Errorf("configs/models/%s is missing", name)
		case w == nil:
			t.Errorf("configs/models/%s is not produced by the generator", name)
		case !bytes.Equal(w, g):
			t.Errorf("configs/models/%s differs from the generator", name)
		}
	}
	if t.Failed() {
		t.Log("regenerate with: go run ./internal/testmodels/cmd/gendemo")
	}
}

func TestWriteRepositoryLayout(t *testing.T) {
	dir := t.TempDir()
	if err := WriteRepository(dir); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want []byte
	}{
		{"mlp/1/model.onnx", MLP()},
		{"strings/1/model.onnx", Strings()},
		{"multi_io/1/model.onnx", MultiIO()},
		{"mlp/model.toml", []byte(mlpConfig)},
	}
	for _, tt := range tests {
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(tt.path)))
		if err != nil {
			t.Errorf("%s: %v", tt.path, err)
			continue
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s: content differs", tt.path)
		}
	}
}
