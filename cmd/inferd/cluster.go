package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/inferd/inferd/cluster/admin"
	"github.com/inferd/inferd/cluster/rollout"
)

// The cluster commands are clients of a node's /v2/cluster endpoints through package
// cluster/admin, which the node serves them with: the JSON types and paths are declared once.

// clusterFlags are the flags every cluster command shares.
type clusterFlags struct {
	url   string
	token string
}

func (f *clusterFlags) register(cmd *cobra.Command, env []string) {
	fl := cmd.Flags()
	fl.StringVarP(&f.url, "url", "u", "http://127.0.0.1:8080", "base URL of any node of the cluster")
	fl.StringVar(&f.token, "token", lookup(env)("INFERD_TOKEN"), "bearer token (default $INFERD_TOKEN); rollout actions need an admin token where auth is on")
}

// clusterTimeout bounds one call to a node: the endpoints answer from memory.
const clusterTimeout = 10 * time.Second

// client calls the node at --url; each call is bounded by clusterTimeout.
func (f *clusterFlags) client() admin.Client {
	return admin.Client{URL: f.url, Token: f.token, HTTP: &http.Client{Timeout: clusterTimeout}}
}

// hint adds what an operator should check to an error of the node's.
func hint(err error) error {
	if errors.Is(err, admin.ErrNotClustered) {
		return fmt.Errorf("%w (is cluster.enabled = true on that node?)", err)
	}
	return err
}

func membersCommand(env []string) *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the cluster's members as one node sees them, and that node's routing counters",
		Long: `List every member the node at --url knows: liveness (alive, suspect, dead, left, by this
node's own probes), serving state (ready, draining, degraded), whether it takes requests from
this node, where it serves HTTP, its hardware class and its ready model versions. Then the
node's router: requests routed, retries, retries refused by the budget, and per peer the tries
in flight, forwarded, failed, and any ejection.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := f.client().Members(cmd.Context())
			if err != nil {
				return hint(err)
			}
			writeMembers(cmd.OutOrStdout(), r, time.Now())
			return nil
		},
	}
	f.register(cmd, env)
	return cmd
}

// writeMembers prints the members table and the routing table; now makes ages reproducible.
func writeMembers(out io.Writer, r admin.Members, now time.Time) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLIVENESS\tSERVING\tROUTABLE\tHTTP\tCLASS\tFOR\tREADY MODELS")
	for _, m := range r.Members {
		name := m.Name
		if m.Local {
			name += " (this node)"
		}
		models := readyModels(m)
		if m.CatalogStale {
			models += " (catalog update pending)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.Liveness, m.Serving, yesNo(m.Routable),
			dash(m.HTTPAddr), dash(m.Class), age(now, m.Since), models)
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "\nrouting on %s: %d routed, %d retries, %d retries refused by the budget\n",
		r.Node, r.Routing.Routed, r.Routing.Retries, r.Routing.BudgetExhausted)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDR\tIN FLIGHT\tTRIES\tFAILURES\tIN A ROW\tEJECTED")
	for _, p := range r.Routing.Peers {
		if p.Local {
			fmt.Fprintf(tw, "%s (this node)\t-\t%d\t%d\t-\t-\t-\n", p.Node, p.InFlight, p.Forwarded)
			continue
		}
		ejected := "-"
		if !p.EjectedUntil.IsZero() {
			ejected = fmt.Sprintf("for %s more (ejection %d)", max(p.EjectedUntil.Sub(now), 0).Round(100*time.Millisecond), p.Ejections)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\n", p.Node, dash(p.Addr), p.InFlight, p.Forwarded, p.Failures, p.ConsecutiveFailures, ejected)
	}
	_ = tw.Flush()
}

// readyModels lists a member's ready versions as "model:v1,v2", models sorted.
func readyModels(m admin.Member) string {
	byModel := map[string][]string{}
	for _, v := range m.Models {
		if v.State == "ready" {
			byModel[v.Model] = append(byModel[v.Model], v.Version)
		}
	}
	if len(byModel) == 0 {
		return "-"
	}
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(byModel)) {
		vs := byModel[name]
		slices.SortFunc(vs, compareVersions)
		parts = append(parts, name+":"+strings.Join(vs, ","))
	}
	return strings.Join(parts, " ")
}

// compareVersions orders numeric versions by number, then anything else by text.
func compareVersions(a, b string) int {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	if errA == nil && errB == nil {
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	}
	return strings.Compare(a, b)
}

func rolloutCommand(env []string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Show and steer canary and blue-green rollouts (routing.toml [[rollout]])",
		Long: `A rollout moves a model's traffic from its stable version to its canary version in the
steps routing.toml defines. Its state is cluster-wide: any node answers and any node accepts an
action, which every node then sees within a few gossip rounds.`,
	}
	cmd.AddCommand(rolloutStatusCommand(env))
	actions := []struct{ name, short string }{
		{admin.ActionStart, "Start the model's rollout again at its first step (retry after an abort)"},
		{admin.ActionPromote, "End the step the rollout waits on (a pause or an analysis) and go on"},
		{admin.ActionPromoteFull, "Skip every remaining step: the canary gets 100% (promoted)"},
		{admin.ActionAbort, "Send all traffic back to the stable version (canary 0%); also the rollback after completion"},
	}
	for _, a := range actions {
		cmd.AddCommand(rolloutActionCommand(env, a.name, a.short))
	}
	return cmd
}

func rolloutStatusCommand(env []string) *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "status [MODEL]",
		Short: "Show every rollout, or one model's in detail",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := f.client().Rollouts(cmd.Context())
			if err != nil {
				return hint(err)
			}
			now := time.Now()
			if len(args) == 0 {
				writeRollouts(cmd.OutOrStdout(), r, now)
				return nil
			}
			for _, st := range r.Rollouts {
				if st.Model == args[0] {
					writeRollout(cmd.OutOrStdout(), st, now)
					return nil
				}
			}
			return fmt.Errorf("no rollout of model %q on node %s (routing.toml defines none, or it has not started)", args[0], r.Node)
		},
	}
	f.register(cmd, env)
	return cmd
}

func rolloutActionCommand(env []string, action, short string) *cobra.Command {
	var f clusterFlags
	var reason string
	cmd := &cobra.Command{
		Use:   action + " MODEL",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := f.client().Act(cmd.Context(), args[0], action, reason)
			if err != nil {
				return hint(err)
			}
			writeRollout(cmd.OutOrStdout(), st, time.Now())
			return nil
		},
	}
	f.register(cmd, env)
	if action == admin.ActionAbort {
		cmd.Flags().StringVar(&reason, "reason", "", "why, recorded in the rollout's state")
	}
	return cmd
}

// writeRollouts prints one line per rollout.
func writeRollouts(out io.Writer, r admin.Rollouts, now time.Time) {
	if len(r.Rollouts) == 0 {
		fmt.Fprintf(out, "no rollouts on node %s\n", r.Node)
		return
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tPHASE\tSTEP\tSTABLE\tCANARY\tCANARY WEIGHT\tGENERATION\tUPDATED\tREASON")
	for _, st := range r.Rollouts {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s ago by %s\t%s\n", st.Model, st.Phase, st.Step, st.Stable, st.Canary,
			percent(st.CanaryWeight), st.Generation, age(now, st.Updated), dash(st.By), dash(st.Reason))
	}
	_ = tw.Flush()
}

// writeRollout prints one rollout in detail.
func writeRollout(out io.Writer, st rollout.State, now time.Time) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("model", st.Model)
	row("phase", dash(string(st.Phase)))
	row("versions", fmt.Sprintf("stable %s, canary %s", dash(st.Stable), dash(st.Canary)))
	row("canary weight", percent(st.CanaryWeight))
	row("step", fmt.Sprintf("%d, since %s ago", st.Step, age(now, st.StepStarted)))
	if st.Passed+st.Failed+st.Inconclusive > 0 {
		row("analysis", fmt.Sprintf("%d passed, %d failed, %d inconclusive windows", st.Passed, st.Failed, st.Inconclusive))
	}
	row("reason", dash(st.Reason))
	row("generation", fmt.Sprintf("%d, written %s ago by %s", st.Generation, age(now, st.Updated), dash(st.By)))
	_ = tw.Flush()
}

func percent(w float64) string { return strconv.FormatFloat(w, 'f', -1, 64) + "%" }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age is how long ago t was, rounded for people ("2.5s", "1m30s", "2h5m", "3d4h"); "-" for
// no time.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// keyBytes is the size of the keys keygen writes: AES-256.
const keyBytes = 32

func keygenCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Write a new gossip encryption key (cluster.secret_key_file)",
		Long: `Write 32 random bytes (an AES-256 key), base64-encoded, to a new file of mode 0600. Copy the
same file to every node of the cluster and set cluster.secret_key_file to it: gossip is then
encrypted and authenticated, and a node without the key cannot join. An existing file is never
overwritten.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := writeKeyFile(out, rand.Reader); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote a new %d-bit gossip key to %s; copy it to every node (mode 0600) and set cluster.secret_key_file\n", keyBytes*8, out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "file to create (mode 0600)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// writeKeyFile creates path (mode 0600, failing if it exists) holding a base64 key read from
// random. A file it could not complete is removed.
func writeKeyFile(path string, random io.Reader) (err error) {
	key := make([]byte, keyBytes)
	if _, err := io.ReadFull(random, key); err != nil {
		return fmt.Errorf("keygen: reading random bytes: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("keygen: %s exists; not overwriting a key (nodes holding it could no longer join): remove it first to replace it", path)
	}
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("keygen: %w", cerr)
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	return nil
}
