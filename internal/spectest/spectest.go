// Package spectest checks JSON bodies against the Open Inference Protocol's OpenAPI document
// (testdata/open_inference_rest.yaml, a verbatim copy of the upstream specification), so that
// any package's tests can assert that what inferd sends is what the protocol describes. It is
// for tests only: it fails a testing.TB and must not be imported by production code.
package spectest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// SpecFile is the path of the OpenAPI document, found next to this source file so that tests in
// any package (whose working directory is their own) can load it.
func SpecFile() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return filepath.Join("testdata", "open_inference_rest.yaml")
	}
	return filepath.Join(filepath.Dir(file), "testdata", "open_inference_rest.yaml")
}

// loadSpec loads and checks the document once per test binary; the document is only read
// afterwards, so concurrent (parallel) tests share it safely.
var loadSpec = sync.OnceValues(func() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromFile(SpecFile())
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", SpecFile(), err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("%s is not a valid OpenAPI document: %w", SpecFile(), err)
	}
	return doc, nil
})

// Validate fails the test unless body is JSON that matches components/schemas/<schema> of the
// specification, for example "inference_response", "inference_error_response",
// "metadata_server_response" or "metadata_model_response". An unknown schema name or an
// unloadable document stops the test.
func Validate(t testing.TB, schema string, body []byte) {
	t.Helper()
	if err := validate(schema, body); err != nil {
		if se := (setupError{}); errors.As(err, &se) {
			t.Fatalf("spectest: %v", err)
		}
		t.Errorf("body does not match the Open Inference Protocol schema %q: %v\nbody: %s", schema, err, clip(body))
	}
}

// setupError is a problem with the check itself rather than with the body.
type setupError struct{ error }

// validate returns why body does not match the schema, or nil.
func validate(schema string, body []byte) error {
	doc, err := loadSpec()
	if err != nil {
		return setupError{err}
	}
	ref, ok := doc.Components.Schemas[schema]
	if !ok || ref.Value == nil {
		return setupError{fmt.Errorf("no schema %q in %s (have %v)", schema, SpecFile(), schemaNames(doc))}
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("not valid JSON: %w", err)
	}
	return ref.Value.VisitJSON(v, openapi3.MultiErrors(), openapi3.DisableSchemaErrorDetails())
}

func schemaNames(doc *openapi3.T) []string {
	names := make([]string, 0, len(doc.Components.Schemas))
	for name := range doc.Components.Schemas {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// clip shortens a body for a failure message.
func clip(body []byte) string {
	const limit = 2000
	if len(body) <= limit {
		return string(body)
	}
	return fmt.Sprintf("%s... (%d bytes)", body[:limit], len(body))
}
