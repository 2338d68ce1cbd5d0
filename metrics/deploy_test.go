package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The deploy counters are read from their source at each scrape, under their documented names.
func TestDeployCollector(t *testing.T) {
	st := DeployStats{FetchedBytes: 100, ServedBytes: 200, CorruptChunks: 3, FailedFetches: 4}
	c := NewDeploy(func() DeployStats { return st })
	want := `
# HELP inferd_deploy_corrupt_chunks_total Chunks from a peer whose sha256 did not match the manifest; each was fetched again elsewhere and never installed.
# TYPE inferd_deploy_corrupt_chunks_total counter
inferd_deploy_corrupt_chunks_total 3
# HELP inferd_deploy_failed_fetches_total Chunk requests to a peer that failed (connection, refusal); the chunk was asked of another holder.
# TYPE inferd_deploy_failed_fetches_total counter
inferd_deploy_failed_fetches_total 4
# HELP inferd_deploy_fetched_bytes_total Chunk bytes this node received from peers for deployments.
# TYPE inferd_deploy_fetched_bytes_total counter
inferd_deploy_fetched_bytes_total 100
# HELP inferd_deploy_served_bytes_total Chunk bytes this node sent to peers for deployments.
# TYPE inferd_deploy_served_bytes_total counter
inferd_deploy_served_bytes_total 200
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	st.CorruptChunks = 5
	again := `
# HELP inferd_deploy_corrupt_chunks_total Chunks from a peer whose sha256 did not match the manifest; each was fetched again elsewhere and never installed.
# TYPE inferd_deploy_corrupt_chunks_total counter
inferd_deploy_corrupt_chunks_total 5
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(again), "inferd_deploy_corrupt_chunks_total"); err != nil {
		t.Errorf("after the source changed: %v", err)
	}
}
