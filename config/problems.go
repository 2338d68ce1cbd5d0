package config

import (
	"errors"
	"strconv"
	"strings"
)

// Sentinel errors that every Problem wraps one of; test with errors.Is on a
// Problem or on the *Problems that holds it.
var (
	// ErrSyntax: the file is not valid TOML (nothing else is checked then).
	ErrSyntax = errors.New("syntax error")
	// ErrUnknownKey: a key, table or INFERD_* variable that the schema lacks.
	ErrUnknownKey = errors.New("unknown key")
	// ErrType: a TOML value of the wrong type, e.g. listen = 8080.
	ErrType = errors.New("wrong type")
	// ErrInvalid: a value of the right type that is malformed or fails a
	// check, e.g. a bad duration or a log level outside the set.
	ErrInvalid = errors.New("invalid value")
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	File string // config file name as given to Load; "" for env and for Validate
	Line int    // 1-based line in File; 0 when not known
	Env  string // the environment variable at fault, if the value came from one
	Key  string // dotted key, e.g. "server.listen"; "" when none applies
	Err  error  // what is wrong; wraps ErrSyntax, ErrUnknownKey, ErrType or ErrInvalid
}

// Error formats the problem as "file:line: key: what", "env NAME: key: what"
// or "key: what", leaving out the parts that do not apply.
func (p Problem) Error() string {
	var b strings.Builder
	switch {
	case p.Env != "":
		b.WriteString("env ")
		b.WriteString(p.Env)
		b.WriteString(": ")
	case p.File != "" && p.Line > 0:
		b.WriteString(p.File)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteString(": ")
	case p.File != "":
		b.WriteString(p.File)
		b.WriteString(": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	if p.Err != nil {
		b.WriteString(p.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (p Problem) Unwrap() error { return p.Err }

// Problems is the error returned by Load, LoadBytes and Validate: every
// problem found, file problems by line first, then environment problems,
// then problems with no location.
type Problems struct {
	List []Problem
}

// Error returns one problem per line.
func (ps *Problems) Error() string {
	lines := make([]string, len(ps.List))
	for i, p := range ps.List {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes each Problem to errors.Is and errors.As.
func (ps *Problems) Unwrap() []error {
	errs := make([]error, len(ps.List))
	for i, p := range ps.List {
		errs[i] = p
	}
	return errs
}
