package ort

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestFindLibraryOrder(t *testing.T) {
	root := t.TempDir()
	p := func(parts ...string) string { return filepath.Join(append([]string{root}, parts...)...) }
	mkfile := func(path string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("lib"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The layout: a system dir, an installed binary in opt/bin with ../lib/inferd, and a
	// checkout at src/ (go.mod) with the working directory two levels below it.
	system := p("usr", "lib", "inferd")
	exe := p("opt", "bin", "inferd")
	wd := p("src", "engine", "ort")
	mkfile(p("src", "go.mod"))
	if err := os.MkdirAll(wd, 0o755); err != nil {
		t.Fatal(err)
	}
	searchList := []string{
		filepath.Join(system, "libonnxruntime.so.1"),
		filepath.Join(system, "libonnxruntime.so"),
		p("opt", "bin", "libonnxruntime.so.1"),
		p("opt", "bin", "libonnxruntime.so"),
		p("opt", "bin", "..", "lib", "inferd", "libonnxruntime.so.1"),
		p("opt", "bin", "..", "lib", "inferd", "libonnxruntime.so"),
		p("src", "build", "onnxruntime", "libonnxruntime.so.1"),
		p("src", "build", "onnxruntime", "libonnxruntime.so"),
	}
	envLib := p("env", "libonnxruntime.so.1")
	explicitLib := p("cfg", "libonnxruntime.so.1")

	tests := []struct {
		name     string
		explicit string
		env      string
		present  []string // files that exist
		want     string
		tried    []string
		wantErr  bool
	}{
		{name: "nothing anywhere", tried: searchList, wantErr: true},
		{name: "checkout build folder", present: searchList[6:7], want: searchList[6], tried: searchList[:7]},
		{name: "next to the binary beats the checkout", present: []string{searchList[3], searchList[6]},
			want: searchList[3], tried: searchList[:4]},
		{name: "../lib/inferd", present: searchList[4:5], want: searchList[4], tried: searchList[:5]},
		{name: "system dir first", present: []string{searchList[1], searchList[2]}, want: searchList[1], tried: searchList[:2]},
		{name: "env beats the search", env: envLib, present: []string{envLib, searchList[0]},
			want: envLib, tried: []string{envLib}},
		{name: "env naming nothing is an error, not a fallback", env: envLib, present: searchList[:1],
			tried: []string{envLib}, wantErr: true},
		{name: "explicit beats env", explicit: explicitLib, env: envLib, present: []string{explicitLib, envLib},
			want: explicitLib, tried: []string{explicitLib}},
		{name: "explicit naming nothing is an error", explicit: explicitLib, env: envLib, present: []string{envLib},
			tried: []string{explicitLib}, wantErr: true},
		{name: "a directory is not a library", explicit: root, tried: []string{root}, wantErr: true},
	}
	all := append(append([]string{envLib, explicitLib}, searchList...), p("cfg"))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range all {
				os.Remove(f)
			}
			for _, f := range tc.present {
				mkfile(f)
			}
			s := searcher{
				getenv: func(k string) string {
					if k == EnvLibrary {
						return tc.env
					}
					return ""
				},
				systemDirs: []string{system},
				executable: func() (string, error) { return exe, nil },
				getwd:      func() (string, error) { return wd, nil },
			}
			got, tried, err := s.find(tc.explicit)
			if tc.wantErr != (err != nil) || (err != nil && !errors.Is(err, ErrLibrary)) {
				t.Fatalf("find = %q, %v; want error %v wrapping ErrLibrary", got, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("found %q, want %q", got, tc.want)
			}
			if !reflect.DeepEqual(tried, tc.tried) {
				t.Errorf("tried\n %q\nwant\n %q", tried, tc.tried)
			}
		})
	}
}

func TestFindLibraryWithoutGoMod(t *testing.T) {
	s := searcher{
		getenv:     func(string) string { return "" },
		executable: func() (string, error) { return "", errors.New("no executable") },
		getwd:      func() (string, error) { return t.TempDir(), nil },
	}
	_, tried, err := s.find("")
	if !errors.Is(err, ErrLibrary) || len(tried) != 0 {
		t.Errorf("find = %v, tried %q; want ErrLibrary and nothing tried", err, tried)
	}
}
