package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestMetricsListen(t *testing.T) {
	tests := []struct {
		doc, env, want, problem string
	}{
		{doc: "", want: ""},
		{doc: "[metrics]\nlisten = \"\"\n", want: ""},
		{doc: "[metrics]\nlisten = \"127.0.0.1:9464\"\n", want: "127.0.0.1:9464"},
		{doc: "[metrics]\nlisten = \":9464\"\n", want: ":9464"},
		{env: "INFERD_METRICS_LISTEN=0.0.0.0:9464", want: "0.0.0.0:9464"},
		{doc: "[metrics]\nlisten = \"9464\"\n", problem: `m.toml:2: metrics.listen: invalid value "9464": want host:port`},
		{env: "INFERD_METRICS_LISTEN=host:http", problem: `env INFERD_METRICS_LISTEN: metrics.listen: invalid value "host:http"`},
	}
	for _, tt := range tests {
		var env []string
		if tt.env != "" {
			env = []string{tt.env}
		}
		c, err := LoadBytes("m.toml", []byte(tt.doc), env)
		if tt.problem != "" {
			if err == nil || !strings.Contains(err.Error(), tt.problem) {
				t.Errorf("%q %q: %v, want a problem containing %q", tt.doc, tt.env, err, tt.problem)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q %q: %v", tt.doc, tt.env, err)
			continue
		}
		if c.Metrics.Listen != tt.want {
			t.Errorf("%q %q: metrics.listen = %q, want %q", tt.doc, tt.env, c.Metrics.Listen, tt.want)
		}
	}
}

// TestOptionalRule: optional only makes sense first (it skips the rules after it), and only on
// strings and lists.
func TestOptionalRule(t *testing.T) {
	for _, typ := range []reflect.Type{
		reflect.TypeFor[struct {
			A string `toml:"a" check:"hostport,optional"`
		}](),
		reflect.TypeFor[struct {
			A int `toml:"a" check:"optional"`
		}](),
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("schemaOf(%s) did not panic", typ)
				}
			}()
			schemaOf(typ)
		}()
	}
	type lists struct {
		A []string `toml:"a" check:"optional,nonempty"`
	}
	if ps := validate(schemaOf(reflect.TypeFor[lists]()), reflect.ValueOf(&lists{}).Elem()); len(ps) != 0 {
		t.Errorf("an empty optional list: %v", ps)
	}
}
