package config

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/inferd/inferd/internal/testutil"
)

// FuzzLoadBytes feeds arbitrary documents to the loader: it must never panic, every failure
// must be a *Problems whose entries name the file, and every success must be a configuration
// that loads again from the same bytes to the same result.
func FuzzLoadBytes(f *testing.F) {
	example, err := os.ReadFile(testutil.ModuleRoot(f) + "/configs/inferd.toml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(example),
		"",
		"[server]\nlisten = \"127.0.0.1:0\"\n",
		"[scheduler]\nmax_queue_delay = \"2ms\"\ndefault_instances = 2\n",
		"[server]\nlisten = 5\n",
		"[nope]\nx = 1\n",
		"[models]\nrepository = \"\"\npoll_interval = \"-1s\"\n",
		"[server\n",
		"a = \"\\u0000\"\n",
		"[log]\nlevel = \"loud\"\n[log]\nlevel = \"info\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := LoadBytes("fuzz.toml", data, nil)
		if err != nil {
			var p *Problems
			if !errors.As(err, &p) || len(p.List) == 0 {
				t.Fatalf("error %v is not a non-empty *Problems", err)
			}
			if !strings.Contains(err.Error(), "fuzz.toml") {
				t.Fatalf("problems do not name the file: %v", err)
			}
			return
		}
		again, err := LoadBytes("fuzz.toml", data, nil)
		if err != nil || again == nil || c == nil {
			t.Fatalf("second load of an accepted document failed: %v", err)
		}
	})
}
