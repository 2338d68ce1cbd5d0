package config

import (
	"errors"
	"slices"
	"testing"
)

// TestTracingChecks: [tracing] values a tag cannot check are refused naming their key, and
// the defaults and a full valid table pass.
func TestTracingChecks(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		bad       []string // keys with problems; none = valid
	}{
		{"defaults", "", nil},
		{"valid", "[tracing]\nendpoint = \"https://collector:4318/otlp\"\nprotocol = \"grpc\"\nsampling_ratio = 0.5\nservice_name = \"edge\"\nresource_attributes = [\"rack=r7\"]\n", nil},
		{"ratio over 1", "[tracing]\nsampling_ratio = 1.5\n", []string{"tracing.sampling_ratio"}},
		{"negative ratio", "[tracing]\nsampling_ratio = -0.1\n", []string{"tracing.sampling_ratio"}},
		{"no scheme", "[tracing]\nendpoint = \"collector:4318\"\n", []string{"tracing.endpoint"}},
		{"other scheme", "[tracing]\nendpoint = \"ftp://collector:4318\"\n", []string{"tracing.endpoint"}},
		{"protocol", "[tracing]\nprotocol = \"thrift\"\n", []string{"tracing.protocol"}},
		{"attribute", "[tracing]\nresource_attributes = [\"rack\", \"=x\"]\n", []string{"tracing.resource_attributes", "tracing.resource_attributes"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadBytes("inferd.toml", []byte(c.doc), nil)
			var ps *Problems
			if c.bad == nil {
				if err != nil {
					t.Fatalf("LoadBytes: %v", err)
				}
				return
			}
			if !errors.As(err, &ps) {
				t.Fatalf("LoadBytes: %v, want *Problems for %v", err, c.bad)
			}
			var keys []string
			for _, p := range ps.List {
				keys = append(keys, p.Key)
			}
			if !slices.Equal(keys, c.bad) {
				t.Errorf("problems for %v (%v), want %v", keys, err, c.bad)
			}
		})
	}
}
