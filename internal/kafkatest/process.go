package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// process is one supervised child (a broker JVM or an Alertmanager) that can be
// started again after it stopped, with the same command line.
type process struct {
	name    string   // for messages: "kafka broker", "alertmanager"
	argv    []string // argv[0] is the executable path
	outPath string   // the child's stdout and stderr are appended here
	logPath string   // the file whose tail explains a failure (may equal outPath)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the running child has exited
	err  error         // Wait's result, valid once done is closed
}

// start launches the child. It does not wait for readiness; the caller polls.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s already running (pid %d)", p.name, p.cmd.Process.Pid)
		}
	}
	out, err := os.OpenFile(p.outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	// The one goroutine per child ends when the child does, so a stopped peer
	// leaves nothing behind for a goroutine-leak check.
	go func() {
		err := cmd.Wait()
		out.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// exited is closed when the current child has exited (nil before any start).
func (p *process) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// exitErr describes how the child ended, for readiness errors.
func (p *process) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		return errors.New("exited with status 0")
	}
	return p.err
}

// stop sends SIGTERM to the child's process group, so that helper processes die
// with it, and SIGKILL if it is still alive after grace. It returns once the
// child has exited; stopping a stopped process is a no-op.
func (p *process) stop(grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	pid := cmd.Process.Pid
	_ = signalGroup(pid, syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		_ = signalGroup(pid, syscall.SIGKILL)
		<-done
	}
}

// failure builds an error that carries the end of the child's log, since the
// reason a JVM did not come up is almost always in its last lines.
func (p *process) failure(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	var b strings.Builder
	b.WriteString(msg)
	for _, path := range uniq(p.logPath, p.outPath) {
		fmt.Fprintf(&b, "\n--- last lines of %s ---\n%s", path, tailFile(path, 40))
	}
	return errors.New(b.String())
}

func uniq(paths ...string) []string {
	var out []string
	for _, p := range paths {
		if p != "" && (len(out) == 0 || out[len(out)-1] != p) {
			out = append(out, p)
		}
	}
	return out
}

// tailFile returns the last n lines of a file, reading at most its last 64 KiB.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	const window = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > window {
		_, _ = f.Seek(st.Size()-window, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// peer is anything Main must stop when the test binary ends.
type peer interface{ shutdown() }

var (
	// mainActive is set by Wrap; Kafka refuses to start a shared broker without
	// it, because nothing else would stop that broker or delete its directory.
	mainActive atomic.Bool

	liveMu sync.Mutex
	live   = map[peer]struct{}{}
)

func register(p peer)   { liveMu.Lock(); live[p] = struct{}{}; liveMu.Unlock() }
func unregister(p peer) { liveMu.Lock(); delete(live, p); liveMu.Unlock() }

// stopAll stops every peer still running, concurrently since a broker takes
// seconds to shut down.
func stopAll() {
	liveMu.Lock()
	peers := make([]peer, 0, len(live))
	for p := range live {
		peers = append(peers, p)
	}
	liveMu.Unlock()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() { defer wg.Done(); p.shutdown() }()
	}
	wg.Wait()
}

// Runner is what goleak.VerifyTestMain accepts (its TestingM interface).
type Runner interface{ Run() int }

type wrapped struct{ m *testing.M }

func (w wrapped) Run() int {
	code := w.m.Run()
	stopAll()
	return code
}

// Wrap returns m as a Runner whose Run runs the tests and then stops the shared
// broker and every broker or Alertmanager still running. Use it with a leak
// checker, which must look only after the peers are gone:
//
//	goleak.VerifyTestMain(kafkatest.Wrap(m))
func Wrap(m *testing.M) Runner {
	mainActive.Store(true)
	return wrapped{m}
}

// Main runs the package's tests, stops the peers the harness started and exits
// with the tests' status. Call it from TestMain in every package whose tests
// use Kafka, StartKafka or StartAlertmanager.
func Main(m *testing.M) {
	os.Exit(Wrap(m).Run())
}

var (
	portsMu sync.Mutex
	// handedOut remembers ports returned in this binary: the kernel may give
	// the same ephemeral port twice once it is closed, and two peers of one
	// test must not race for it.
	handedOut = map[int]bool{}
)

// freePort asks the kernel for an unused loopback TCP port. The port is closed
// again before the caller binds it, so another process could take it in
// between; on loopback in a test run that window is harmless in practice.
func freePort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		portsMu.Lock()
		seen := handedOut[port]
		handedOut[port] = true
		portsMu.Unlock()
		if !seen {
			return port, nil
		}
	}
	return 0, errors.New("no fresh free port after 20 tries")
}

// FreePort returns a loopback TCP port that is free now and was not returned
// before in this test binary.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("kafkatest: free port: %v", err)
	}
	return port
}

// waitReady polls url's /-/ready (the readiness endpoint of Prometheus and
// Alertmanager) every period until it answers 200, the process exits, or
// timeout passes; name says which server it is in errors.
func (p *process) waitReady(name, url string, client *http.Client, timeout, period time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	exited := p.exited()
	var lastErr error
	for {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url+"/-/ready", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /-/ready: %s", resp.Status)
		}
		lastErr = err
		select {
		case <-exited:
			return p.failure("%s %s exited before it was ready: %v", name, url, p.exitErr())
		case <-deadline.C:
			return p.failure("%s %s not ready within %s: %v", name, url, timeout, lastErr)
		case <-time.After(period):
		}
	}
}
