package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// kind is how a field's value is written in TOML and in the environment.
type kind int

const (
	kindTable kind = iota
	kindString
	kindBool
	kindInt
	kindFloat
	kindDuration
	kindStrings
)

// String names the kind for operators (KeyDoc.Type, "want ..." messages).
func (k kind) String() string {
	switch k {
	case kindTable:
		return "table"
	case kindString:
		return "string"
	case kindBool:
		return "boolean"
	case kindInt:
		return "integer"
	case kindFloat:
		return "float"
	case kindDuration:
		return "duration"
	case kindStrings:
		return "string list"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// field is one node of the schema tree derived from a struct type.
type field struct {
	key   string // dotted TOML key from the root; "" for the root
	name  string // last part of key
	env   string // INFERD_... variable; for tables the prefix without the trailing "_"
	kind  kind
	typ   reflect.Type
	index []int // reflect field index path from the root struct
	doc   string
	path  bool // a filesystem path, resolved against the config file's directory
	// restart is the key a reload reports when this field changes and only a restart applies
	// it: the field's own key, or that of the restart-only table it is in; "" = it changes live.
	restart string
	rules   []rule
	fields  []*field // children of a table, in declaration order
}

// child returns the direct child called name, or nil.
func (f *field) child(name string) *field {
	for _, c := range f.fields {
		if c.name == name {
			return c
		}
	}
	return nil
}

// leaves returns every non-table field under f, depth first in declaration
// order.
func (f *field) leaves() []*field {
	var out []*field
	for _, c := range f.fields {
		if c.kind == kindTable {
			out = append(out, c.leaves()...)
		} else {
			out = append(out, c)
		}
	}
	return out
}

// tables returns every table under f (not f itself).
func (f *field) tables() []*field {
	var out []*field
	for _, c := range f.fields {
		if c.kind == kindTable {
			out = append(out, c)
			out = append(out, c.tables()...)
		}
	}
	return out
}

var durationType = reflect.TypeFor[time.Duration]()

// schemaOf builds the schema tree of struct type t. It panics on a field it
// cannot handle or a malformed tag: those are programming errors that the
// package's tests catch, not operator errors.
func schemaOf(t reflect.Type) *field {
	root := &field{kind: kindTable, typ: t, env: "INFERD"}
	buildTable(root)
	seen := map[string]string{}
	for _, f := range append(root.leaves(), root.tables()...) {
		if other, dup := seen[f.env]; dup {
			panic(fmt.Sprintf("config: keys %s and %s share env var %s", other, f.key, f.env))
		}
		seen[f.env] = f.key
	}
	return root
}

func buildTable(t *field) {
	for i := range t.typ.NumField() {
		sf := t.typ.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag, ok := sf.Tag.Lookup("toml")
		if !ok {
			panic(fmt.Sprintf("config: field %s.%s has no toml tag", t.typ, sf.Name))
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" {
			panic(fmt.Sprintf("config: field %s.%s has an empty toml name", t.typ, sf.Name))
		}
		if t.child(name) != nil {
			panic(fmt.Sprintf("config: table %q has two fields named %q", t.key, name))
		}
		f := &field{
			key:   joinKey(t.key, name),
			name:  name,
			env:   t.env + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")),
			typ:   sf.Type,
			index: append(append([]int(nil), t.index...), i),
			doc:   sf.Tag.Get("doc"),
			path:  sf.Tag.Get("path") == "file",
		}
		f.kind = kindOf(sf.Type, f.key)
		switch tag := sf.Tag.Get("reload"); tag {
		case "":
			f.restart = t.restart
		case "restart":
			f.restart = f.key
		case "live":
			f.restart = ""
		default:
			panic(fmt.Sprintf("config: %s: reload tag %q, want restart or live", f.key, tag))
		}
		if f.path && f.kind != kindString {
			panic(fmt.Sprintf("config: %s: path tag on a %s", f.key, f.kind))
		}
		f.rules = parseRules(f, sf.Tag.Get("check"))
		if f.kind == kindTable {
			buildTable(f)
		}
		t.fields = append(t.fields, f)
	}
}

func kindOf(t reflect.Type, key string) kind {
	if t == durationType {
		return kindDuration
	}
	switch t.Kind() {
	case reflect.Struct:
		return kindTable
	case reflect.String:
		return kindString
	case reflect.Bool:
		return kindBool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return kindInt
	case reflect.Float32, reflect.Float64:
		return kindFloat
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return kindStrings
		}
	}
	panic(fmt.Sprintf("config: %s: unsupported field type %s", key, t))
}

func joinKey(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// parseText converts s, written as in an environment variable, to a value of
// f's type. It is also used for min= arguments in check tags.
func parseText(f *field, s string) (reflect.Value, error) {
	v := reflect.New(f.typ).Elem()
	switch f.kind {
	case kindString:
		v.SetString(s)
	case kindBool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return v, fmt.Errorf("%w %q: want true or false", ErrInvalid, s)
		}
		v.SetBool(b)
	case kindInt:
		n, err := strconv.ParseInt(s, 10, f.typ.Bits())
		if err != nil {
			return v, fmt.Errorf("%w %q: want an integer that fits %d bits", ErrInvalid, s, f.typ.Bits())
		}
		v.SetInt(n)
	case kindFloat:
		x, err := strconv.ParseFloat(s, f.typ.Bits())
		if err != nil {
			return v, fmt.Errorf("%w %q: want a number", ErrInvalid, s)
		}
		v.SetFloat(x)
	case kindDuration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return v, fmt.Errorf("%w %q: want a duration such as \"30s\" or \"1m30s\"", ErrInvalid, s)
		}
		v.SetInt(int64(d))
	case kindStrings:
		var list []string
		for part := range strings.SplitSeq(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				list = append(list, part)
			}
		}
		v.Set(reflect.ValueOf(list).Convert(f.typ))
	default:
		return v, fmt.Errorf("%w: a table has no value of its own", ErrType)
	}
	return v, nil
}

// formatValue writes v, of f's type, as a TOML value.
func formatValue(f *field, v reflect.Value) string {
	switch f.kind {
	case kindString:
		return strconv.Quote(v.String())
	case kindBool:
		return strconv.FormatBool(v.Bool())
	case kindInt:
		return strconv.FormatInt(v.Int(), 10)
	case kindFloat:
		s := strconv.FormatFloat(v.Float(), 'g', -1, f.typ.Bits())
		if !strings.ContainsAny(s, ".eEnN") { // TOML needs a dot, exponent, inf or nan
			s += ".0"
		}
		return s
	case kindDuration:
		return strconv.Quote(formatDuration(time.Duration(v.Int())))
	case kindStrings:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = strconv.Quote(v.Index(i).String())
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return ""
}

// formatDuration prefers whole seconds ("120s") over time.Duration.String's
// "2m0s", which operators do not write.
func formatDuration(d time.Duration) string {
	if d != 0 && d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

// KeyDoc documents one configuration key.
type KeyDoc struct {
	Key     string // dotted TOML key, e.g. "server.listen"
	Env     string // environment override, e.g. "INFERD_SERVER_LISTEN"
	Type    string // string, boolean, integer, float, duration or "string list"
	Default string // the default written as a TOML value, e.g. `"10s"`
	Doc     string // one line for operators
	// Restart is the key a reload names (in /health's restart_required and sd_notify STATUS=)
	// when this key changes, since only a restart applies it: the key itself or the table it
	// belongs to. Empty: a reload applies a change live.
	Restart string
}

// Keys documents every key of Config, in declaration order.
func Keys() []KeyDoc {
	def := Default()
	return keysOf(schemaOf(reflect.TypeFor[Config]()), reflect.ValueOf(def))
}

func keysOf(root *field, def reflect.Value) []KeyDoc {
	leaves := root.leaves()
	docs := make([]KeyDoc, len(leaves))
	for i, f := range leaves {
		docs[i] = KeyDoc{
			Key:     f.key,
			Env:     f.env,
			Type:    f.kind.String(),
			Default: formatValue(f, def.FieldByIndex(f.index)),
			Doc:     f.doc,
			Restart: f.restart,
		}
	}
	return docs
}
