// Package deploycheck holds the tests that keep deploy/ honest: every
// Kubernetes manifest decodes strictly into the Kubernetes API types (and the
// Prometheus Operator's), the generated manifests equal their sources, and
// every PromQL expression of the Grafana dashboard parses and names only
// metrics a running monitor exports. It has no code of its own.
package deploycheck
