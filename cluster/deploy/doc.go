// Package deploy carries model versions between the nodes of a cluster: an operator uploads a
// version to any node, which stores its files content-addressed (sha256, in fixed-size chunks
// each with its own sha256) under the node's state directory and records a manifest as a
// cluster record; every target node then fetches the chunks from whichever members already
// hold them, verifying each chunk as it arrives, and installs the version atomically into its
// model repository, so the loader only ever sees complete versions. Waves release the version
// to a few nodes first; a version that fails to load there stops the deploy.
//
// Files (one concern each): manifest.go (the manifest, its checks and its digest), record.go
// (the cluster records: deployments and per-node status), store.go (blobs, partial blobs,
// chunk verification, free space, GC), ingest.go (an upload's tar stream into the store),
// fetch.go (chunks from peers, bounded and rate-limited), install.go (staging and rename into
// the repository), service.go (the per-node loop and the wave coordinator), http.go (the
// endpoints), client.go (what the CLI calls).
//
// The package must not load models itself (it asks its Loader), must not route requests, and
// never trusts a peer's bytes before their hash matches the manifest.
package deploy
