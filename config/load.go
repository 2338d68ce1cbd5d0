package config

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/inferd/inferd/internal/tomlx"
)

// Load reads the TOML file at path and returns Default() overlaid with the
// file, then with the INFERD_* overrides found in env (entries "NAME=value",
// normally os.Environ()), validated. If the file cannot be read it returns
// the wrapped I/O error (errors.Is(err, fs.ErrNotExist) works); if anything in
// the file or env is wrong it returns a *Problems listing all of it.
func Load(path string, env []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return LoadBytes(path, data, env)
}

// LoadBytes is Load for a document already in memory. name is the file's
// path: it prefixes problems and is the base of relative path keys. Empty
// data is a valid document, so LoadBytes(name, nil, env) gives the defaults
// with env overrides. Errors are always a *Problems.
func LoadBytes(name string, data []byte, env []string) (*Config, error) {
	c := Default()
	if _, problems := load(reflect.ValueOf(&c).Elem(), name, data, env); len(problems) > 0 {
		return nil, &Problems{List: problems}
	}
	return &c, nil
}

// origin records where a key's value came from: a line of the file, or an
// environment variable.
type origin struct {
	line int
	env  string
}

// loader holds the state of one load; it decodes into dst, an addressable
// struct that already holds the defaults.
type loader struct {
	file     string
	root     *field
	dst      reflect.Value
	origins  map[string]origin // by dotted key, for values not left at default
	problems []Problem
}

// load fills dst from data and env, validates it, and returns where each key
// was set and every problem, sorted.
func load(dst reflect.Value, name string, data []byte, env []string) (map[string]origin, []Problem) {
	l := &loader{file: name, root: schemaOf(dst.Type()), dst: dst, origins: map[string]origin{}}
	if !l.checkSyntax(data) {
		return l.origins, l.problems
	}
	l.walkFile(data)
	l.applyEnv(env)
	l.resolvePaths()
	for _, p := range validate(l.root, dst) {
		switch o, ok := l.origins[p.Key]; {
		case ok && o.env != "":
			p.Env = o.env
		case ok:
			p.File, p.Line = l.file, o.line
		default:
			p.File = l.file // a default that this file leaves in place
		}
		l.problems = append(l.problems, p)
	}
	slices.SortStableFunc(l.problems, func(a, b Problem) int {
		if c := cmp.Compare(placeOrder(a), placeOrder(b)); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
	return l.origins, l.problems
}

// placeOrder sorts file problems first, then env, then unlocated ones.
func placeOrder(p Problem) int {
	switch {
	case p.Env != "":
		return 1
	case p.Line > 0:
		return 0
	}
	return 2
}

func (l *loader) problem(line int, key string, err error) {
	l.problems = append(l.problems, Problem{File: l.file, Line: line, Key: key, Err: err})
}

// checkSyntax runs go-toml's full decoder over the document, which catches
// what the AST walk does not (malformed TOML, duplicate keys, redefined
// tables). Nothing else can be checked reliably in a document that fails it.
func (l *loader) checkSyntax(data []byte) bool {
	var doc map[string]any
	err := toml.Unmarshal(data, &doc)
	if err == nil {
		return true
	}
	line := 0
	if problems := tomlx.Problems(err); problems != nil {
		line = problems[0].Line
	}
	// DecodeError has no message accessor; drop its package prefix.
	l.problem(line, "", fmt.Errorf("%w: %s", ErrSyntax, strings.TrimPrefix(err.Error(), "toml: ")))
	return false
}

// walkFile checks every table header and key-value of the document against
// the schema and stores the good values in l.dst.
func (l *loader) walkFile(data []byte) {
	var p unstable.Parser
	p.Reset(data)
	table := l.root // nil after a bad header: its keys are not reported again
	for p.NextExpression() {
		expr := p.Expression()
		switch expr.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, line := keyParts(&p, expr)
			table = nil
			f, err := l.resolve(l.root, parts)
			switch {
			case err != nil:
				l.problem(line, strings.Join(parts, "."), err)
			case expr.Kind == unstable.ArrayTable:
				l.problem(line, f.key, typeError(f, "array of tables"))
			case f.kind != kindTable:
				l.problem(line, f.key, typeError(f, "table"))
			default:
				table = f
			}
		case unstable.KeyValue:
			if table != nil {
				l.keyValue(&p, table, expr)
			}
		}
	}
	if err := p.Error(); err != nil { // checkSyntax should have caught it
		l.problem(0, "", fmt.Errorf("%w: %w", ErrSyntax, err))
	}
}

// keyValue handles `a.b = value` inside table (or inside an inline table).
func (l *loader) keyValue(p *unstable.Parser, table *field, kv *unstable.Node) {
	parts, line := keyParts(p, kv)
	f, err := l.resolve(table, parts)
	if err != nil {
		l.problem(line, joinKey(table.key, strings.Join(parts, ".")), err)
		return
	}
	value := kv.Value()
	if f.kind == kindTable {
		if value.Kind != unstable.InlineTable {
			l.problem(line, f.key, typeError(f, tomlKind(value.Kind)))
			return
		}
		for it := value.Children(); it.Next(); {
			if n := it.Node(); n.Kind == unstable.KeyValue {
				l.keyValue(p, f, n)
			}
		}
		return
	}
	v, badLine, err := fromNode(p, f, value)
	if err != nil {
		l.problem(cmp.Or(badLine, line), f.key, err)
		return
	}
	l.dst.FieldByIndex(f.index).Set(v)
	l.origins[f.key] = origin{line: line}
}

// resolve walks the dotted key parts down from table.
func (l *loader) resolve(table *field, parts []string) (*field, error) {
	f := table
	for i, part := range parts {
		if f.kind != kindTable {
			return nil, typeError(f, "table")
		}
		c := f.child(part)
		if c == nil {
			return nil, unknownKey(joinKey(f.key, strings.Join(parts[i:], ".")), l.root)
		}
		f = c
	}
	return f, nil
}

// keyParts returns the parts of a table header's or key-value's key and the
// line it starts on.
func keyParts(p *unstable.Parser, n *unstable.Node) ([]string, int) {
	var parts []string
	line := 0
	for it := n.Key(); it.Next(); {
		k := it.Node()
		if line == 0 {
			line = lineOf(p, k)
		}
		parts = append(parts, string(k.Data))
	}
	return parts, line
}

// lineOf returns the line a node starts on, or 0 for nodes without a range
// (arrays).
func lineOf(p *unstable.Parser, n *unstable.Node) int {
	if n.Raw.Length == 0 {
		return 0
	}
	return p.Shape(n.Raw).Start.Line
}

// fromNode converts a TOML value to f's type. On error it also returns the
// line of the offending value when it is known (an array element).
func fromNode(p *unstable.Parser, f *field, n *unstable.Node) (reflect.Value, int, error) {
	out := reflect.New(f.typ).Elem()
	want := map[kind]unstable.Kind{
		kindString: unstable.String, kindBool: unstable.Bool, kindInt: unstable.Integer,
		kindFloat: unstable.Float, kindDuration: unstable.String, kindStrings: unstable.Array,
	}[f.kind]
	if n.Kind != want && !(f.kind == kindFloat && n.Kind == unstable.Integer) {
		return out, lineOf(p, n), typeError(f, tomlKind(n.Kind))
	}
	text := string(n.Data)
	switch f.kind {
	case kindString:
		out.SetString(text)
	case kindBool:
		out.SetBool(text == "true")
	case kindInt:
		i, err := strconv.ParseInt(strings.ReplaceAll(text, "_", ""), 0, 64)
		if err != nil || out.OverflowInt(i) {
			return out, 0, fmt.Errorf("%w %s: out of range for a %d-bit integer", ErrInvalid, text, f.typ.Bits())
		}
		out.SetInt(i)
	case kindFloat:
		x, err := parseTOMLFloat(text)
		if err != nil || out.OverflowFloat(x) {
			return out, 0, fmt.Errorf("%w %s: out of range for a %d-bit float", ErrInvalid, text, f.typ.Bits())
		}
		out.SetFloat(x)
	case kindDuration:
		v, err := parseText(f, text)
		return v, 0, err
	case kindStrings:
		var list []string
		for it := n.Children(); it.Next(); {
			e := it.Node()
			if e.Kind == unstable.Comment {
				continue
			}
			if e.Kind != unstable.String {
				return out, lineOf(p, e), fmt.Errorf("%w: want %s, got %s in the array", ErrType, wantOf(f), tomlKind(e.Kind))
			}
			list = append(list, string(e.Data))
		}
		out.Set(reflect.ValueOf(list).Convert(f.typ))
	}
	return out, 0, nil
}

// parseTOMLFloat parses a float that the TOML parser has already checked.
func parseTOMLFloat(s string) (float64, error) {
	switch s {
	case "inf", "+inf":
		return math.Inf(1), nil
	case "-inf":
		return math.Inf(-1), nil
	case "nan", "+nan", "-nan":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
}

func tomlKind(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "string"
	case unstable.Bool:
		return "boolean"
	case unstable.Integer:
		return "integer"
	case unstable.Float:
		return "float"
	case unstable.Array:
		return "array"
	case unstable.InlineTable:
		return "inline table"
	case unstable.LocalDate, unstable.LocalTime, unstable.LocalDateTime, unstable.DateTime:
		return "date/time"
	}
	return strings.ToLower(k.String())
}

// wantOf describes the TOML a field takes.
func wantOf(f *field) string {
	switch f.kind {
	case kindDuration:
		return `duration string such as "30s"`
	case kindStrings:
		return "array of strings"
	}
	return f.kind.String()
}

func typeError(f *field, got string) error {
	return fmt.Errorf("%w: want %s, got %s", ErrType, wantOf(f), got)
}

// applyEnv applies the INFERD_* entries of env that name keys.
func (l *loader) applyEnv(env []string) {
	byEnv := map[string]*field{}
	for _, f := range l.root.leaves() {
		byEnv[f.env] = f
	}
	for _, entry := range env {
		name, value, ok := strings.Cut(entry, "=")
		if !ok || !strings.HasPrefix(name, "INFERD_") {
			continue
		}
		f := byEnv[name]
		if f == nil {
			if l.underTable(name) && !foreignEnv(name) {
				err := error(ErrUnknownKey)
				if s := suggest(name, slices.Collect(maps.Keys(byEnv))); s != "" {
					err = fmt.Errorf("%w (did you mean %s?)", ErrUnknownKey, s)
				}
				l.problems = append(l.problems, Problem{Env: name, Err: err})
			}
			continue
		}
		v, err := parseText(f, value)
		if err != nil {
			l.problems = append(l.problems, Problem{Env: name, Key: f.key, Err: err})
			continue
		}
		l.dst.FieldByIndex(f.index).Set(v)
		l.origins[f.key] = origin{env: name}
	}
}

// underTable reports whether an env var name starts with a table's prefix
// (INFERD_SERVER_...), which makes a name that matches no key a typo rather
// than someone else's variable.
func (l *loader) underTable(name string) bool {
	for _, t := range l.root.tables() {
		if strings.HasPrefix(name, t.env+"_") {
			return true
		}
	}
	return false
}

// foreignEnv lists INFERD_* variables that are read elsewhere and are not
// configuration keys.
func foreignEnv(name string) bool {
	switch name {
	case "INFERD_ONNXRUNTIME_LIBRARY": // read by the engine's library search
		return true
	}
	return false
}

// resolvePaths makes relative path keys set in the file relative to the
// file's directory (absolute when the working directory is known).
func (l *loader) resolvePaths() {
	dir := filepath.Dir(l.file)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	for _, f := range l.root.leaves() {
		o, ok := l.origins[f.key]
		if !f.path || !ok || o.env != "" {
			continue
		}
		v := l.dst.FieldByIndex(f.index)
		if s := v.String(); s != "" && !filepath.IsAbs(s) {
			v.SetString(filepath.Join(dir, s))
		}
	}
}

// unknownKey builds the error for an unknown dotted key, suggesting a known
// key that is a likely typo or the same name in another table.
func unknownKey(key string, root *field) error {
	var known []string
	for _, f := range append(root.leaves(), root.tables()...) {
		if !strings.HasPrefix(key, f.key+".") { // "scheduler" is no help for "scheduler.x"
			known = append(known, f.key)
		}
	}
	s := suggest(key, known)
	if s == "" {
		last := key[strings.LastIndexByte(key, '.')+1:]
		var same []string
		for _, k := range known {
			if k[strings.LastIndexByte(k, '.')+1:] == last {
				same = append(same, k)
			}
		}
		if len(same) > 0 && len(same) <= 3 { // "listen" is server.listen or metrics.listen
			s = strings.Join(same, " or ")
		}
	}
	if s == "" {
		return ErrUnknownKey
	}
	return fmt.Errorf("%w (did you mean %s?)", ErrUnknownKey, s)
}

// suggest returns the candidate closest to name if it is within two edits.
func suggest(name string, candidates []string) string {
	slices.Sort(candidates) // deterministic among equals
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
