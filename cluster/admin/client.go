package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/inferd/inferd/cluster/rollout"
)

// ErrNotClustered is wrapped by the error of a call that found no cluster endpoints: the node
// answered 404 to an endpoint every clustered node serves, so clustering is off there.
var ErrNotClustered = errors.New("the node serves no cluster endpoints")

// maxAnswer bounds what the client reads of an answer.
const maxAnswer = 16 << 20

// Client calls one node's endpoints.
type Client struct {
	// URL is the node's base URL ("http://127.0.0.1:8080").
	URL string
	// Token, if set, is sent as a bearer token (rollout actions need an admin one where auth
	// is on).
	Token string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
}

// StatusError is a node's answer other than 2xx, with the message of its {"error": ...} body
// (or the body itself).
type StatusError struct {
	Method, URL string
	Status      int
	Message     string
	// notClustered: the endpoint exists on every clustered node, so a 404 means clustering is
	// off there.
	notClustered bool
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.URL, e.Status, http.StatusText(e.Status), e.Message)
}

// Unwrap makes errors.Is(err, ErrNotClustered) true for a 404 from an endpoint every
// clustered node serves.
func (e *StatusError) Unwrap() error {
	if e.notClustered && e.Status == http.StatusNotFound {
		return ErrNotClustered
	}
	return nil
}

// Members asks for the node's view of the members and its routing counters.
func (c Client) Members(ctx context.Context) (Members, error) {
	var m Members
	err := c.call(ctx, http.MethodGet, PathMembers, nil, &m, true)
	return m, err
}

// Rollouts asks for every rollout the node knows.
func (c Client) Rollouts(ctx context.Context) (Rollouts, error) {
	var r Rollouts
	err := c.call(ctx, http.MethodGet, PathRollouts, nil, &r, true)
	return r, err
}

// Act takes one of the Actions on the model's rollout and returns the rollout's state after
// it; reason is recorded with an abort ("" for the default). A 404 here is a model without a
// rollout as often as a node without clustering, so it does not wrap ErrNotClustered.
func (c Client) Act(ctx context.Context, model, action, reason string) (rollout.State, error) {
	var body any
	if action == ActionAbort && reason != "" {
		body = abortBody{Reason: reason}
	}
	var st rollout.State
	err := c.call(ctx, http.MethodPost, PathRollouts+"/"+url.PathEscape(model)+"/"+action, body, &st, false)
	return st, err
}

// call sends one request and decodes a 2xx JSON answer into out.
func (c Client) call(ctx context.Context, method, path string, body, out any, everyNode bool) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("node URL %q: %w", c.URL, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, req.URL, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &StatusError{Method: method, URL: req.URL.String(), Status: resp.StatusCode,
			Message: strings.TrimSpace(string(data)), notClustered: everyNode}
		var kerr struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &kerr) == nil && kerr.Error != "" {
			e.Message = kerr.Error
		}
		return e
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: unreadable answer: %w", method, req.URL, err)
	}
	return nil
}
