package deploy

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Client calls one node's deploy endpoints (what inferd deploy and undeploy use).
type Client struct {
	URL   string // the node's base URL
	Token string // bearer token; deploy and undeploy need the admin scope where auth is on
	HTTP  *http.Client
}

// StatusError is a node's answer other than 2xx, with its {"error": ...} message.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// UploadOptions are an upload's choices.
type UploadOptions struct {
	Nodes    []string
	Replicas int
	Wave     int
	Deployer string
}

// Upload sends the version at path (a directory with model.onnx, or one .onnx file, sent as
// model.onnx) to the node, as a tar stream.
func (c Client) Upload(ctx context.Context, model, version, path string, o UploadOptions) (DeploymentView, error) {
	files, err := localFiles(path)
	if err != nil {
		return DeploymentView{}, err
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(pw, files)) }()
	q := uploadQuery(o)
	u := strings.TrimRight(c.URL, "/") + PathDeployments + "/" + url.PathEscape(model) + "/" + url.PathEscape(version) + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, pr)
	if err != nil {
		return DeploymentView{}, err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	req.Header.Set(HeaderBytes, strconv.FormatInt(total, 10))
	var dv DeploymentView
	err = c.do(req, &dv)
	pr.Close()
	return dv, err
}

// UploadFrom asks the node to download the version's model.onnx from an HTTP(S) URL (an S3 or
// MinIO presigned URL, say) and check its sha256; peers then fetch it from that node.
func (c Client) UploadFrom(ctx context.Context, model, version, from, sha string, o UploadOptions) (DeploymentView, error) {
	q := uploadQuery(o)
	q.Set("from", from)
	q.Set("sha256", sha)
	u := strings.TrimRight(c.URL, "/") + PathDeployments + "/" + url.PathEscape(model) + "/" + url.PathEscape(version) + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return DeploymentView{}, err
	}
	var dv DeploymentView
	return dv, c.do(req, &dv)
}

func uploadQuery(o UploadOptions) url.Values {
	q := url.Values{}
	if len(o.Nodes) > 0 {
		q.Set("nodes", strings.Join(o.Nodes, ","))
	}
	if o.Wave > 0 {
		q.Set("wave", strconv.Itoa(o.Wave))
	}
	if o.Replicas > 0 {
		q.Set("replicas", strconv.Itoa(o.Replicas))
	}
	if o.Deployer != "" {
		q.Set("deployer", o.Deployer)
	}
	return q
}

// Status asks for the deployments the node knows (of one model when model is set).
func (c Client) Status(ctx context.Context, model string) (View, error) {
	u := strings.TrimRight(c.URL, "/") + PathDeployments
	if model != "" {
		u += "?model=" + url.QueryEscape(model)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return View{}, err
	}
	var v View
	return v, c.do(req, &v)
}

// Undeploy asks every node to remove the version.
func (c Client) Undeploy(ctx context.Context, model, version string, force bool) (DeploymentView, error) {
	u := strings.TrimRight(c.URL, "/") + PathDeployments + "/" + url.PathEscape(model) + "/" + url.PathEscape(version)
	if force {
		u += "?force=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	if err != nil {
		return DeploymentView{}, err
	}
	var dv DeploymentView
	return dv, c.do(req, &dv)
}

func (c Client) do(req *http.Request, out any) error {
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
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &StatusError{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
		var kerr struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &kerr) == nil && kerr.Error != "" {
			e.Message = kerr.Error
		}
		return e
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: unreadable answer: %w", req.Method, req.URL, err)
	}
	return nil
}

// localFile is one file to upload.
type localFile struct {
	name, path string
	size       int64
}

// localFiles lists what an upload of path sends, refusing what a node would refuse anyway
// (links, devices, bad names) before a byte is sent.
func localFiles(path string) ([]localFile, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().IsRegular() {
		if !strings.HasSuffix(path, ".onnx") {
			return nil, fmt.Errorf("%s: a single file must be an .onnx model (or give a directory)", path)
		}
		return []localFile{{name: ModelFile, path: path, size: st.Size()}}, nil
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: not a directory or a regular file", path)
	}
	var out []localFile
	err = filepath.WalkDir(path, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(path, p)
		if rel == "." {
			return nil
		}
		name := filepath.ToSlash(rel)
		if err := ValidPath(name); err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file (links and devices are refused)", p)
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		out = append(out, localFile{name: name, path: p, size: info.Size()})
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, f := range out {
		if f.name == ModelFile {
			return out, nil
		}
	}
	return nil, fmt.Errorf("%s: no %s in the directory", path, ModelFile)
}

func writeTar(w io.Writer, files []localFile) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: f.size, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		fd, err := os.Open(f.path)
		if err != nil {
			return err
		}
		n, err := io.Copy(tw, fd)
		fd.Close()
		if err != nil {
			return err
		}
		if n != f.size {
			return errors.New(f.path + ": changed while being sent")
		}
	}
	return tw.Close()
}
