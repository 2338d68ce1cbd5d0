package config

import (
	"reflect"
	"slices"
)

// The keys a reload cannot apply live are marked in the schema itself (the reload:"restart"
// tag on Config's fields), so the list exists once: RestartRequired and KeepRestartOnly read it,
// and so do Keys and the tests that reload every key.

// RestartRequired lists, in schema order, the restart-only keys whose values differ between
// running and next; a key inside a restart-only table is named by the table ("cluster").
func RestartRequired(running, next *Config) []string {
	var keys []string
	rv, nv := reflect.ValueOf(running).Elem(), reflect.ValueOf(next).Elem()
	for _, f := range schemaOf(rv.Type()).leaves() {
		if f.restart == "" || slices.Contains(keys, f.restart) {
			continue
		}
		if !reflect.DeepEqual(rv.FieldByIndex(f.index).Interface(), nv.FieldByIndex(f.index).Interface()) {
			keys = append(keys, f.restart)
		}
	}
	return keys
}

// KeepRestartOnly returns next with every restart-only key at running's value: the
// configuration a reload puts in force, true to what the daemon runs with. Neither argument
// changes (slices are shared, as nothing mutates a loaded Config).
func KeepRestartOnly(running, next *Config) *Config {
	out := *next
	ov, rv := reflect.ValueOf(&out).Elem(), reflect.ValueOf(running).Elem()
	for _, f := range schemaOf(ov.Type()).leaves() {
		if f.restart != "" {
			ov.FieldByIndex(f.index).Set(rv.FieldByIndex(f.index))
		}
	}
	return &out
}
