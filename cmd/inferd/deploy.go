package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/inferd/inferd/cluster/admin"
	"github.com/inferd/inferd/cluster/deploy"
)

// The deploy commands are clients of a node's /v2/cluster/deployments endpoints through
// package cluster/deploy, which serves them.

// deployFlags are the flags deploy, deploy status and undeploy share: the cluster commands'
// --url and --token, with --server as the same URL.
type deployFlags struct {
	clusterFlags
	wait    bool
	timeout time.Duration
}

func (f *deployFlags) register(cmd *cobra.Command, env []string) {
	f.clusterFlags.register(cmd, env)
	fl := cmd.Flags()
	fl.StringVar(&f.url, "server", "http://127.0.0.1:8080", "base URL of any node of the cluster (the same as --url)")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Minute, "how long to wait for every node")
}

func (f *deployFlags) deployClient() deploy.Client {
	// No overall timeout: an upload of a large version takes what it takes.
	return deploy.Client{URL: f.url, Token: f.token, HTTP: &http.Client{}}
}

// pollInterval is how often a waiting command asks for the deployment's state.
const pollInterval = 500 * time.Millisecond

func deployCommand(env []string) *cobra.Command {
	var (
		f       deployFlags
		noWait  bool
		rollout bool
		o       deploy.UploadOptions
		from    string
		sha     string
	)
	cmd := &cobra.Command{
		Use:   "deploy [flags] MODEL VERSION PATH | --from URL --sha256 HEX MODEL VERSION",
		Short: "Upload a model version to the cluster; every target node fetches, installs and loads it",
		Long: `Upload a version (a directory with model.onnx and the files it needs, model.toml included, or one
.onnx file) to the node at --server. That node stores it and records a deployment; the first wave
(--wave nodes, this node first) installs and loads it, and only once it is READY there do the
other target nodes fetch it, from every member that already holds it. The command waits until
the version is READY on every target and exits non-zero with each failed node's reason.
Versions are immutable: the same MODEL VERSION with other content is refused (409). With
--rollout, the model's [[rollout]] in routing.toml starts once the version is READY everywhere.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if from != "" {
				return cobra.ExactArgs(2)(cmd, args)
			}
			return cobra.ExactArgs(3)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Deployer = deployer(env)
			var dv deploy.DeploymentView
			var err error
			if from != "" {
				if sha == "" {
					return errors.New("--from needs --sha256 (the file's sha256, checked by the node that downloads it)")
				}
				dv, err = f.deployClient().UploadFrom(cmd.Context(), args[0], args[1], from, sha, o)
			} else {
				dv, err = f.deployClient().Upload(cmd.Context(), args[0], args[1], args[2], o)
			}
			if err != nil {
				return fmt.Errorf("deploy %s %s: %w", args[0], args[1], err)
			}
			out := cmd.OutOrStdout()
			if dv.Unchanged {
				fmt.Fprintf(out, "%s version %s is deployed already with the same content (%s); nothing to do\n", dv.Model, dv.Version, short(dv.Digest))
			} else {
				fmt.Fprintf(out, "uploaded %s version %s: %d files, %s, digest %s; waves %v\n", dv.Model, dv.Version, dv.Files, bytesText(dv.Bytes), short(dv.Digest), dv.Waves)
			}
			if noWait {
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			if err := waitDeployed(ctx, f.deployClient(), dv, out); err != nil {
				return err
			}
			if !rollout {
				return nil
			}
			st, err := f.client().Act(ctx, dv.Model, admin.ActionStart, "")
			if err != nil {
				return fmt.Errorf("%s version %s is READY, but its rollout did not start: %w", dv.Model, dv.Version, err)
			}
			fmt.Fprintf(out, "rollout of %s started: %s → %s, %s at %s\n", st.Model, st.Stable, st.Canary, st.Phase, percent(st.CanaryWeight))
			return nil
		},
	}
	f.register(cmd, env)
	fl := cmd.Flags()
	fl.BoolVar(&noWait, "no-wait", false, "return once the node has stored the version")
	fl.BoolVar(&rollout, "rollout", false, "once READY on every target, start the model's [[rollout]] from routing.toml (inferd rollout start)")
	fl.IntVar(&o.Wave, "wave", 1, "nodes in the first wave; the others fetch once these are READY")
	fl.StringVar(&from, "from", "", "instead of PATH: an HTTP(S) URL of the model.onnx (an S3 or MinIO presigned URL) that the node downloads")
	fl.StringVar(&sha, "sha256", "", "with --from: the file's sha256 (hex), checked before anything is deployed")
	fl.IntVar(&o.Replicas, "replicas", 0, "instead of --nodes: this many targets, the nodes with the most memory available that can admit the model")
	fl.StringSliceVar(&o.Nodes, "nodes", nil, "target nodes (names, comma-separated); default every member, also those that join later")
	cmd.AddCommand(deployStatusCommand(env))
	return cmd
}

// deployer names who deployed: user@host.
func deployer(env []string) string {
	host, _ := os.Hostname()
	return lookup(env)("USER") + "@" + host
}

// waitDeployed follows the deployment until every target is READY, the deployment fails, or
// ctx ends; it prints each node's progress as it changes.
func waitDeployed(ctx context.Context, c deploy.Client, dv deploy.DeploymentView, out io.Writer) error {
	last := map[string]string{}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		v, err := c.Status(ctx, dv.Model)
		if err == nil {
			cur, ok := find(v, dv)
			if !ok {
				return fmt.Errorf("%s version %s is no longer deployed", dv.Model, dv.Version)
			}
			for _, n := range cur.Nodes {
				line := nodeLine(n)
				if last[n.Node] != line {
					fmt.Fprintf(out, "  %-16s %s\n", n.Node, line)
					last[n.Node] = line
				}
			}
			if done, err := settled(cur); done {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s version %s: %w", dv.Model, dv.Version, ctx.Err())
		case <-t.C:
		}
	}
}

func find(v deploy.View, dv deploy.DeploymentView) (deploy.DeploymentView, bool) {
	for _, d := range v.Deployments {
		if d.Model == dv.Model && d.Version == dv.Version && d.Digest == dv.Digest && d.Phase != deploy.PhaseRemoved {
			return d, true
		}
	}
	return deploy.DeploymentView{}, false
}

// settled reports whether the deployment is over, and its error: every failed node's reason.
func settled(d deploy.DeploymentView) (bool, error) {
	var failed []string
	for _, n := range d.Nodes {
		if n.State == deploy.StateFailed {
			failed = append(failed, n.Node+": "+n.Reason)
		}
	}
	switch {
	case d.Phase == deploy.PhaseFailed:
		if len(failed) == 0 {
			failed = append(failed, d.Reason)
		}
		return true, fmt.Errorf("deployment of %s version %s stopped:\n  %s", d.Model, d.Version, strings.Join(failed, "\n  "))
	case d.Phase == deploy.PhaseComplete:
		if len(failed) > 0 {
			return true, fmt.Errorf("%s version %s failed on %d node(s):\n  %s", d.Model, d.Version, len(failed), strings.Join(failed, "\n  "))
		}
		return true, nil
	}
	return false, nil
}

func nodeLine(n deploy.NodeStatus) string {
	switch n.State {
	case deploy.StateFetching:
		return fmt.Sprintf("fetching %s / %s", bytesText(n.Done), bytesText(n.Total))
	case deploy.StateFailed:
		return "failed: " + n.Reason
	}
	return n.State
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func short(digest string) string { return digest[:min(12, len(digest))] }

func deployStatusCommand(env []string) *cobra.Command {
	var f deployFlags
	cmd := &cobra.Command{
		Use:   "status [MODEL]",
		Short: "Show every deployment (or one model's) and each node's progress",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			model := ""
			if len(args) == 1 {
				model = args[0]
			}
			v, err := f.deployClient().Status(cmd.Context(), model)
			if err != nil {
				return hint(err)
			}
			writeDeployments(cmd.OutOrStdout(), v)
			return nil
		},
	}
	f.register(cmd, env)
	return cmd
}

// writeDeployments prints one block per deployment and a line per node.
func writeDeployments(out io.Writer, v deploy.View) {
	if len(v.Deployments) == 0 {
		fmt.Fprintf(out, "no deployments known to %s\n", v.Node)
		return
	}
	for i, d := range v.Deployments {
		if i > 0 {
			fmt.Fprintln(out)
		}
		fmt.Fprintf(out, "%s version %s: %s, %d files, digest %s, by %s at %s from %s\n", d.Model, d.Version, bytesText(d.Bytes),
			d.Files, short(d.Digest), dash(d.Deployer), d.Time.Format(time.RFC3339), d.Origin)
		phase := d.Phase
		if d.Reason != "" {
			phase += ": " + d.Reason
		}
		fmt.Fprintf(out, "phase %s, waves %v (%d released)\n", phase, d.Waves, d.Released)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tSTATE")
		for _, n := range d.Nodes {
			fmt.Fprintf(tw, "%s\t%s\n", n.Node, nodeLine(n))
		}
		_ = tw.Flush()
	}
}

func undeployCommand(env []string) *cobra.Command {
	var (
		f      deployFlags
		force  bool
		noWait bool
	)
	cmd := &cobra.Command{
		Use:   "undeploy [flags] MODEL VERSION",
		Short: "Remove a deployed model version from every node",
		Long: `Remove a version deployed with inferd deploy from every node, and the files no other deployment
needs. Refused (409) while a rollout or a split in routing.toml still sends it traffic, and when
it is the model's only version ready on any node, unless --force.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dv, err := f.deployClient().Undeploy(cmd.Context(), args[0], args[1], force)
			if err != nil {
				var se *deploy.StatusError
				if errors.As(err, &se) {
					return fmt.Errorf("undeploy %s %s: %s", args[0], args[1], se.Message)
				}
				return fmt.Errorf("undeploy %s %s: %w", args[0], args[1], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "undeploying %s version %s\n", dv.Model, dv.Version)
			if noWait {
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			return waitRemoved(ctx, f.deployClient(), f.client(), dv, cmd.OutOrStdout())
		},
	}
	f.register(cmd, env)
	cmd.Flags().BoolVar(&force, "force", false, "remove the model's only serving version too")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the undeploy is recorded")
	return cmd
}

// waitRemoved waits until no alive node that installed the version still has it (one that is
// down removes it when it returns).
func waitRemoved(ctx context.Context, c deploy.Client, members admin.Client, dv deploy.DeploymentView, out io.Writer) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		v, err := c.Status(ctx, dv.Model)
		ms, merr := members.Members(ctx)
		if err == nil && merr == nil {
			alive := map[string]bool{}
			for _, m := range ms.Members {
				alive[m.Name] = m.Liveness == "alive"
			}
			var left, down []string
			for _, d := range v.Deployments {
				if d.Model != dv.Model || d.Version != dv.Version {
					continue
				}
				for _, n := range d.Nodes {
					if n.State != deploy.StateInstalled && n.State != deploy.StateReady && n.State != deploy.StateFetching {
						continue
					}
					if alive[n.Node] {
						left = append(left, n.Node)
					} else {
						down = append(down, n.Node)
					}
				}
			}
			if len(left) == 0 {
				fmt.Fprintf(out, "%s version %s removed from every node that is up\n", dv.Model, dv.Version)
				if len(down) > 0 {
					fmt.Fprintf(out, "down now, removing it when back: %s\n", strings.Join(down, ", "))
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the removal of %s version %s: %w", dv.Model, dv.Version, ctx.Err())
		case <-t.C:
		}
	}
}
