package config

import (
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// rule is one parsed entry of a field's check tag.
type rule struct {
	name  string        // nonempty, oneof, min, hostport, optional
	oneof []string      // for oneof
	min   reflect.Value // for min, of the field's type
}

func parseRules(f *field, tag string) []rule {
	if tag == "" {
		return nil
	}
	var rules []rule
	for part := range strings.SplitSeq(tag, ",") {
		name, arg, _ := strings.Cut(strings.TrimSpace(part), "=")
		r := rule{name: name}
		ok := false
		switch name {
		case "nonempty":
			ok = arg == "" && (f.kind == kindString || f.kind == kindStrings)
		case "hostport":
			ok = arg == "" && f.kind == kindString
		case "optional":
			ok = arg == "" && len(rules) == 0 && (f.kind == kindString || f.kind == kindStrings)
		case "oneof":
			r.oneof = strings.Split(arg, "|")
			ok = arg != "" && f.kind == kindString
		case "min":
			if f.kind == kindInt || f.kind == kindFloat || f.kind == kindDuration {
				v, err := parseText(f, arg)
				r.min, ok = v, err == nil
			}
		}
		if !ok {
			panic(fmt.Sprintf("config: %s: bad check %q for a %s", f.key, part, f.kind))
		}
		rules = append(rules, r)
	}
	return rules
}

// check returns what is wrong with v under r, or nil.
func (r rule) check(f *field, v reflect.Value) error {
	switch r.name {
	case "nonempty":
		if v.Len() == 0 {
			return fmt.Errorf("%w: must not be empty", ErrInvalid)
		}
	case "oneof":
		if !slices.Contains(r.oneof, v.String()) {
			return fmt.Errorf("%w %s: want one of %s", ErrInvalid, formatValue(f, v), strings.Join(r.oneof, ", "))
		}
	case "min":
		less := false
		if f.kind == kindFloat {
			less = v.Float() < r.min.Float()
		} else {
			less = v.Int() < r.min.Int()
		}
		if less {
			return fmt.Errorf("%w %s: must be at least %s", ErrInvalid, formatValue(f, v), formatValue(f, r.min))
		}
	case "hostport":
		return checkHostPort(v.String())
	}
	return nil
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err == nil {
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			err = fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
	}
	if err != nil {
		return fmt.Errorf("%w %q: want host:port such as \"127.0.0.1:8080\" or \":8080\": %w", ErrInvalid, s, err)
	}
	return nil
}

// Validate checks the values of c (not where they came from): every check tag
// of the schema, then crossChecks. It returns nil or a *Problems whose
// entries carry the key but no file or line; Load and LoadBytes run the same
// checks and add the location of each value.
func (c *Config) Validate() error {
	return asError(validate(schemaOf(reflect.TypeFor[Config]()), reflect.ValueOf(c).Elem()))
}

func validate(root *field, v reflect.Value) []Problem {
	var out []Problem
	for _, f := range root.leaves() {
		fv := v.FieldByIndex(f.index)
		for _, r := range f.rules {
			if r.name == "optional" && fv.Len() == 0 {
				break
			}
			if err := r.check(f, fv); err != nil {
				out = append(out, Problem{Key: f.key, Err: err})
				break // one complaint per key is enough
			}
		}
	}
	if c, ok := v.Addr().Interface().(*Config); ok {
		out = append(out, crossChecks(c)...)
	}
	return out
}

// crossChecks holds the rules that involve more than one key and so cannot be
// a check tag. Give each problem the Key the operator should edit.
func crossChecks(c *Config) []Problem {
	var out []Problem
	bad := func(key, format string, args ...any) {
		out = append(out, Problem{Key: key, Err: fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)})
	}
	tls := c.Server.TLS
	if (tls.CertFile == "") != (tls.KeyFile == "") {
		bad("server.tls.key_file", "cert_file and key_file must be set together")
	}
	if tls.ClientAuth != "none" && tls.ClientAuth != "" {
		if tls.ClientCAFile == "" {
			bad("server.tls.client_auth", "%q needs client_ca_file", tls.ClientAuth)
		}
		if tls.CertFile == "" {
			bad("server.tls.client_auth", "%q needs cert_file and key_file (client certificates need HTTPS)", tls.ClientAuth)
		}
	}
	// Port 0 asks the kernel for a free port: listeners that all ask never clash (tests do).
	if l := c.GRPC.Listen; l != "" && !anyPort(l) && (l == c.Server.Listen || l == c.Metrics.Listen) {
		bad("grpc.listen", "%q is also server.listen or metrics.listen: gRPC needs a port of its own", l)
	}
	if c.GPU.MemoryFraction > 1 {
		bad("gpu.memory_fraction", "%v is more than 1: a fraction of the free memory", c.GPU.MemoryFraction)
	}
	if c.Limits.MaxJSONDepth > 64 {
		bad("limits.max_json_depth", "%d is more than 64, the decoder's own bound", c.Limits.MaxJSONDepth)
	}
	tracingChecks(c, bad)
	return out
}

func asError(ps []Problem) error {
	if len(ps) == 0 {
		return nil
	}
	return &Problems{List: ps}
}

// anyPort reports whether the host:port addr asks for a port the kernel picks (port 0).
func anyPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}
