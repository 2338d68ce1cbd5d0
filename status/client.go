package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/inferd/inferd/kserve"
)

// maxAnswer bounds what the client reads of an answer (a cluster of many nodes with many
// models stays well under it).
const maxAnswer = 32 << 20

// Client reads one node's status.
type Client struct {
	// URL is the node's base URL ("http://127.0.0.1:8080").
	URL string
	// Token, if set, is sent as a bearer token; Authorization, if set, is sent as the header
	// as it is (a node passing on its caller's credentials to its peers).
	Token, Authorization string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
}

// HTTPError is a node's answer other than 200, with the message of its {"error": ...} body.
type HTTPError struct {
	URL     string
	Code    int
	Message string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("GET %s: %d %s: %s", e.URL, e.Code, http.StatusText(e.Code), e.Message)
}

// Status asks for the node's own status.
func (c Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.get(ctx, Path, &st)
}

// Cluster asks the node for every member's status.
func (c Client) Cluster(ctx context.Context) (Cluster, error) {
	var cl Cluster
	return cl, c.get(ctx, Path+"?cluster=1", &cl)
}

func (c Client) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.URL, "/")+path, nil)
	if err != nil {
		return fmt.Errorf("node URL %q: %w", c.URL, err)
	}
	switch {
	case c.Authorization != "":
		req.Header.Set("Authorization", c.Authorization)
	case c.Token != "":
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
		return fmt.Errorf("GET %s: %w", req.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return &HTTPError{URL: req.URL.String(), Code: resp.StatusCode, Message: strings.TrimSpace(kserve.ErrorMessage(data))}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("GET %s: unreadable answer: %w", req.URL, err)
	}
	return nil
}

// IsAuth reports whether err is a refused token (401 or 403).
func IsAuth(err error) bool {
	var he *HTTPError
	return errors.As(err, &he) && (he.Code == http.StatusUnauthorized || he.Code == http.StatusForbidden)
}
