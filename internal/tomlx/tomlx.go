// Package tomlx holds what inferd's strict TOML readers (config, models' model.toml, the
// cluster's routing.toml) share: where go-toml says a decode problem is, and a Duration
// written as a Go duration string.
//
// It neither reads files nor formats messages: each reader keeps the file:line wording its
// users already see and builds it from a Problem.
package tomlx

import (
	"errors"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Problem is one problem go-toml found while decoding a document.
type Problem struct {
	// Line and Column are 1-based; go-toml gives a position with every decode error.
	Line, Column int
	// Key is the dotted key being decoded; empty when go-toml names none (a syntax error).
	Key string
	// Unknown says that Key is not a field of the target (a strict decoder's complaint).
	Unknown bool
	// Err is go-toml's own error; its text begins "toml: ".
	Err error
}

// Problems explains an error of toml.Unmarshal or a toml.Decoder: one Problem for a decode
// error, one per key for a strict decoder's unknown keys. It returns nil for any other error
// (one from reading, or a target go-toml cannot decode into), which has no place in the
// document.
func Problems(err error) []Problem {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		out := make([]Problem, len(strict.Errors))
		for i := range strict.Errors {
			out[i] = problem(&strict.Errors[i])
			out[i].Unknown = true
		}
		return out
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		return []Problem{problem(de)}
	}
	return nil
}

func problem(de *toml.DecodeError) Problem {
	line, col := de.Position()
	return Problem{Line: line, Column: col, Key: strings.Join(de.Key(), "."), Err: de}
}

// Duration is a time.Duration written as a Go duration string ("2ms", "90s") in TOML and JSON.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d Duration) String() string { return time.Duration(d).String() }
