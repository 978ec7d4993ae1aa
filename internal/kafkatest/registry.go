package kafkatest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// ApicurioVersion is the Apicurio Registry release the harness runs; it must
// equal the version scripts/deps.sh fetches (the cache directory's name).
// 3.0.x runs on Java 17; 3.3 needs Java 21.
const ApicurioVersion = "3.0.9"

// SchemaRegistry is a real Apicurio Registry process on loopback serving the
// Confluent-compatible API, started by StartSchemaRegistry. Its storage is an
// H2 database file, so schemas survive Stop and Start like a real outage.
type SchemaRegistry struct {
	t    testing.TB
	dir  string
	port int

	mu   sync.Mutex
	proc *process
}

func apicurioJar() string {
	return filepath.Join(cacheDir(), "apicurio-"+ApicurioVersion, "apicurio-registry-app-"+ApicurioVersion+"-runner.jar")
}

// StartSchemaRegistry starts Apicurio Registry (cached by scripts/deps.sh) on
// a free loopback port, sets the default compatibility to BACKWARD, and stops
// it when the test ends. Without Java or the cached archive the test is
// skipped, and fails under CI=true.
func StartSchemaRegistry(t testing.TB) *SchemaRegistry {
	t.Helper()
	java := requireKafka(t) // the same Java 17 runs the registry
	jar := apicurioJar()
	if _, err := os.Stat(filepath.Join(filepath.Dir(jar), ".complete")); err != nil {
		unavailable(t, "Apicurio Registry %s is not in %s", ApicurioVersion, filepath.Dir(jar))
	}
	r := &SchemaRegistry{t: t, dir: t.TempDir(), port: FreePort(t)}
	r.proc = &process{
		name: "schema registry",
		argv: []string{java.java,
			"-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
			"-Dquarkus.http.host=127.0.0.1",
			"-Dquarkus.http.port=" + strconv.Itoa(r.port),
			"-Dapicurio.datasource.url=jdbc:h2:file:" + filepath.Join(r.dir, "registry"),
			"-jar", jar,
		},
		outPath: filepath.Join(r.dir, "registry.log"),
	}
	t.Cleanup(r.Stop)
	began := time.Now()
	r.mu.Lock()
	err := r.startLocked()
	r.mu.Unlock()
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPut, r.URL()+"/config", bytes.NewReader([]byte(`{"compatibility":"BACKWARD"}`)))
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("kafkatest: set registry compatibility: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("kafkatest: set registry compatibility: %s", resp.Status)
	}
	t.Logf("kafkatest: schema registry %s ready in %s; log %s", r.URL(), time.Since(began).Round(time.Millisecond), r.proc.outPath)
	return r
}

// URL returns the Confluent-compatible API's base URL,
// http://127.0.0.1:port/apis/ccompat/v7, the same across Stop and Start.
func (r *SchemaRegistry) URL() string {
	return "http://127.0.0.1:" + strconv.Itoa(r.port) + "/apis/ccompat/v7"
}

// LogFile returns the path of the registry's log.
func (r *SchemaRegistry) LogFile() string { return r.proc.outPath }

// Stop stops the registry (SIGTERM, SIGKILL after 10 s) and returns when it
// has exited; its schemas stay on disk for Start.
func (r *SchemaRegistry) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.proc.stop(10 * time.Second)
	unregister(r)
}

// Start starts a stopped registry again on the same port and storage, as
// after an outage, and returns once it is ready.
func (r *SchemaRegistry) Start() {
	r.t.Helper()
	if err := r.Restart(); err != nil {
		r.t.Fatalf("kafkatest: %v", err)
	}
}

// Restart is Start for a goroutine other than the test's: it returns the
// error instead of failing the test.
func (r *SchemaRegistry) Restart() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.startLocked(); err != nil {
		return fmt.Errorf("restart schema registry: %w", err)
	}
	return nil
}

func (r *SchemaRegistry) shutdown() { r.Stop() }

func (r *SchemaRegistry) startLocked() error {
	if done := r.proc.exited(); done != nil {
		select {
		case <-done:
		default:
			return nil // already running
		}
	}
	if err := r.proc.start(); err != nil {
		return err
	}
	register(r)
	if err := r.waitReady(90 * time.Second); err != nil {
		r.proc.stop(10 * time.Second)
		unregister(r)
		return err
	}
	return nil
}

// waitReady polls /health/ready, which answers 200 once storage is up.
func (r *SchemaRegistry) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	exited := r.proc.exited()
	ready := "http://127.0.0.1:" + strconv.Itoa(r.port) + "/health/ready"
	var lastErr error
	for {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, ready, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /health/ready: %s", resp.Status)
		}
		lastErr = err
		select {
		case <-exited:
			return r.proc.failure("schema registry exited before it was ready: %v", r.proc.exitErr())
		case <-deadline.C:
			return r.proc.failure("schema registry not ready within %s: %v", timeout, lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
