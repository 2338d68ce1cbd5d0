package cluster

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is the gossip port (TCP and UDP) used when Bind names none.
const DefaultPort = 7946

// Errors returned by this package. Callers match them with errors.Is.
var (
	// ErrInvalid wraps every rejected option or argument.
	ErrInvalid = errors.New("cluster: invalid")
	// ErrBadKey means a gossip key is not 16, 24 or 32 bytes (after base64 decoding).
	ErrBadKey = errors.New("cluster: gossip key must be 16, 24 or 32 bytes (AES-128/192/256)")
	// ErrKeyFileMode means a key file is readable or writable by group or others.
	ErrKeyFileMode = errors.New("cluster: key file permissions too open")
	// ErrJoin means no address of a join could be reached (a wrong key or label reads the same).
	ErrJoin = errors.New("cluster: join failed")
	// ErrClosed is returned by calls on a node after Leave or Shutdown.
	ErrClosed = errors.New("cluster: node has left or shut down")
)

// Options configure a node. Zero timing fields take the LAN defaults written beside them.
type Options struct {
	// Name is the stable node id (from config, never the IP). 1–128 bytes of letters,
	// digits, '.', '_' and '-'. It must be unique in the cluster.
	Name string
	// Bind is the host:port that gossip listens on (TCP and UDP); the host must be an IP
	// literal. Default "0.0.0.0:7946"; port 0 picks a free port (tests).
	Bind string
	// Advertise is the host:port peers reach this node at, when it differs from Bind (NAT,
	// or Bind on 0.0.0.0 with several private addresses). Default: derived from Bind.
	Advertise string
	// Join lists seed addresses (host:port, or host for DefaultPort). Start joins them
	// once; the re-join loop keeps trying the ones that are not live members.
	Join []string
	// SecretKey enables encrypted, authenticated gossip (AES-GCM) when set; 16, 24 or 32
	// bytes. A node with another key, or none, cannot join. See LoadKeyFile.
	SecretKey []byte
	// Label is stamped on every packet and stream and checked on receipt, so clusters that
	// share a network (or a key) stay apart. At most 255 bytes.
	Label string
	// AllowedCIDRs, when not empty, are the only networks gossip is accepted from (IPv4 and
	// IPv6 listed separately): packets and streams are filtered by source address, and
	// members by advertised address. This node's own advertise address must be inside.
	AllowedCIDRs []string
	// HTTPAddr is the inference address advertised to peers (host:port).
	HTTPAddr string
	// Class is the hardware class advertised to peers ("cpu", "gpu:H100").
	Class string

	// ProbeInterval is how often memberlist probes a random peer and how often this
	// package pings every peer directly. Default 1s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long to wait for a probe's ack: the 99th percentile RTT. Default 500ms.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long memberlist keeps a peer suspect before declaring it
	// dead: SuspicionMult × max(1, log10(N)) × ProbeInterval. Default 4.
	SuspicionMult int
	// GossipInterval is how often queued broadcasts are sent to random peers. Default 200ms.
	GossipInterval time.Duration
	// PushPullInterval is how often full state (membership, catalogs, records) is synced
	// with one random peer. Default 30s.
	PushPullInterval time.Duration
	// StreamTimeout bounds each TCP exchange (join, push-pull, fetch). Default 10s.
	StreamTimeout time.Duration
	// SuspectAfter is how long without a round trip to a peer before this node marks it
	// suspect. Default 3×ProbeInterval + ProbeTimeout.
	SuspectAfter time.Duration
	// RejoinInterval is the first delay of the re-join loop; each failed attempt at an
	// address doubles its delay up to RejoinMaxInterval. Defaults 5s and 15s: memberlist
	// heals a partition by itself only while it still gossips to the dead (PushPullInterval,
	// 30s), so after a longer one the re-join loop alone merges the halves, within about
	// RejoinMaxInterval (plus a stream timeout for an attempt in flight) of the heal. An
	// attempt is one TCP exchange per missing address, cheap at this rate.
	RejoinInterval    time.Duration
	RejoinMaxInterval time.Duration
	// ForgetAfter is how long a dead or left peer stays listed (and, if dead, re-joined)
	// before it is forgotten. Default 24h.
	ForgetAfter time.Duration

	// Logger receives the package's logs and, at debug level, memberlist's. Default: discard.
	Logger *slog.Logger

	// wrapTransport lets tests put a fault-injecting transport around the real one.
	wrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
}

// config is Options after validation and defaults, with parsed addresses.
type config struct {
	Options
	bindHost      string
	bindPort      int
	advertiseHost string
	advertisePort int
	cidrs         []net.IPNet
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ProbeInterval, time.Second)
	def(&o.ProbeTimeout, 500*time.Millisecond)
	if o.SuspicionMult <= 0 {
		o.SuspicionMult = 4
	}
	def(&o.GossipInterval, 200*time.Millisecond)
	def(&o.PushPullInterval, 30*time.Second)
	def(&o.StreamTimeout, 10*time.Second)
	def(&o.SuspectAfter, 3*o.ProbeInterval+o.ProbeTimeout)
	def(&o.RejoinInterval, 5*time.Second)
	def(&o.RejoinMaxInterval, 15*time.Second)
	if o.RejoinMaxInterval < o.RejoinInterval {
		o.RejoinMaxInterval = o.RejoinInterval
	}
	def(&o.ForgetAfter, 24*time.Hour)
	if o.Bind == "" {
		o.Bind = net.JoinHostPort("0.0.0.0", strconv.Itoa(DefaultPort))
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// validate checks every option that can be checked without the network and parses the
// addresses. All errors wrap ErrInvalid, ErrBadKey or ErrMetaTooLarge.
func (o Options) validate() (config, error) {
	c := config{Options: o.withDefaults()}
	if err := validName(c.Name); err != nil {
		return c, err
	}
	var err error
	if c.bindHost, c.bindPort, err = splitIPPort("bind", c.Bind); err != nil {
		return c, err
	}
	if c.Advertise != "" {
		if c.advertiseHost, c.advertisePort, err = splitIPPort("advertise", c.Advertise); err != nil {
			return c, err
		}
		if c.advertisePort == 0 {
			return c, fmt.Errorf("%w: advertise %q needs a port", ErrInvalid, c.Advertise)
		}
	}
	for _, s := range c.Join {
		if strings.TrimSpace(s) == "" {
			return c, fmt.Errorf("%w: empty join address", ErrInvalid)
		}
	}
	if n := len(c.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return c, fmt.Errorf("%w: got %d bytes", ErrBadKey, n)
	}
	if len(c.Label) > memberlist.LabelMaxSize {
		return c, fmt.Errorf("%w: label of %d bytes, limit %d", ErrInvalid, len(c.Label), memberlist.LabelMaxSize)
	}
	for _, s := range c.AllowedCIDRs {
		_, n, err := net.ParseCIDR(strings.TrimSpace(s))
		if err != nil {
			return c, fmt.Errorf("%w: allowed CIDR %q: %v", ErrInvalid, s, err)
		}
		c.cidrs = append(c.cidrs, *n)
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return c, fmt.Errorf("%w: probe timeout %v must be shorter than probe interval %v", ErrInvalid, c.ProbeTimeout, c.ProbeInterval)
	}
	if err := checkMetaSize(c.HTTPAddr, c.Class); err != nil {
		return c, err
	}
	return c, nil
}

func validName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: node name must be 1–%d bytes, got %d", ErrInvalid, maxNameLen, len(name))
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("%w: node name %q: only letters, digits, '.', '_' and '-'", ErrInvalid, name)
		}
	}
	return nil
}

func splitIPPort(what, hp string) (string, int, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s %q: %v", ErrInvalid, what, hp, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return "", 0, fmt.Errorf("%w: %s %q: host must be an IP address", ErrInvalid, what, hp)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s %q: bad port", ErrInvalid, what, hp)
	}
	return host, int(p), nil
}

// LoadKeyFile reads a gossip key: base64 (standard alphabet, padding optional, surrounding
// whitespace ignored) of 16, 24 or 32 bytes. The file must not be accessible to group or
// others (mode 0600 or stricter), like an SSH private key.
func LoadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cluster: key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cluster: key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; allow the owner only (chmod 600 %s)", ErrKeyFileMode, path, perm, path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return nil, fmt.Errorf("cluster: key file %s: %w", path, err)
	}
	text := strings.TrimSpace(string(raw))
	key, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(text)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not base64: %v", ErrBadKey, path, err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("%w: %s holds %d bytes", ErrBadKey, path, n)
	}
	return key, nil
}
