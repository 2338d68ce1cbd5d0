package tomlx

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

type doc struct {
	Delay Duration `toml:"delay"`
	Table struct {
		Count int `toml:"count"`
	} `toml:"table"`
}

func decode(t *testing.T, text string) error {
	t.Helper()
	var d doc
	return toml.NewDecoder(strings.NewReader(text)).DisallowUnknownFields().Decode(&d)
}

func TestProblems(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []Problem // Err is checked for being set, not compared
	}{
		{"syntax", "delay = \"1s\"\n[table\n", []Problem{{Line: 2, Column: 7}}},
		{"wrong type", "[table]\ncount = \"x\"\n", []Problem{{Line: 2, Column: 9, Key: "table.count"}}},
		{"bad duration", "delay = \"soon\"\n", []Problem{{Line: 1, Column: 9, Key: "delay"}}},
		{"unknown keys, each", "delay = \"1s\"\nextra = 1\n[table]\ncuont = 2\n", []Problem{
			{Line: 2, Column: 1, Key: "extra", Unknown: true},
			{Line: 4, Column: 1, Key: "table.cuont", Unknown: true},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Problems(decode(t, c.doc))
			if len(got) != len(c.want) {
				t.Fatalf("Problems = %+v, want %+v", got, c.want)
			}
			for i, p := range got {
				if p.Err == nil || !strings.HasPrefix(p.Err.Error(), "toml: ") {
					t.Errorf("problem %d: Err = %v, want go-toml's error", i, p.Err)
				}
				p.Err = nil
				if p != c.want[i] {
					t.Errorf("problem %d = %+v, want %+v", i, p, c.want[i])
				}
			}
		})
	}
	if got := Problems(errors.New("read: permission denied")); got != nil {
		t.Errorf("an error from elsewhere: Problems = %+v, want nil", got)
	}
}

func TestDurationRoundTrip(t *testing.T) {
	var d doc
	if err := toml.Unmarshal([]byte("delay = \"1m30s\"\n"), &d); err != nil {
		t.Fatal(err)
	}
	if time.Duration(d.Delay) != 90*time.Second {
		t.Errorf("delay = %v, want 1m30s", time.Duration(d.Delay))
	}
	text, err := d.Delay.MarshalText()
	if err != nil || string(text) != "1m30s" || d.Delay.String() != "1m30s" {
		t.Errorf("MarshalText = %q, %v; String = %q; want 1m30s", text, err, d.Delay.String())
	}
}
