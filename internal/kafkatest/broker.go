package kafkatest

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The broker's configuration templates, shared with scripts/devstack.sh.
var (
	//go:embed broker.properties.in
	brokerPropertiesTemplate string
	//go:embed log4j2.xml
	log4jTemplate string
)

// brokerJVM are the broker's JVM options: Kafka's own G1 settings (from
// kafka-run-class.sh) with a heap small enough for two brokers of parallel test
// binaries on this machine, and an exit on OOM rather than a zombie broker
// that no test can reach. scripts/devstack.sh uses the same options.
var brokerJVM = []string{
	"-Xms256m", "-Xmx768m",
	"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
	"-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError",
	"-Djava.awt.headless=true",
}

// toolJVM runs the short-lived storage formatter: interpreted-plus-C1 code and
// the serial collector start faster, and it does nothing long enough for C2.
var toolJVM = []string{"-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"}

const (
	// readyTimeout bounds a broker start; it takes 2-4 s here, the margin is
	// for a machine busy with two test binaries.
	readyTimeout = 90 * time.Second
	// stopGrace is how long a broker may take for a controlled shutdown before
	// it is killed; it usually needs about 2.5 s.
	stopGrace = 30 * time.Second
)

// Broker is a real single-node Apache Kafka broker (KRaft, combined
// broker+controller) on loopback, started by StartKafka.
type Broker struct {
	t      testing.TB // fails Start and Stop; nil for the shared broker
	shared bool       // the shared broker owns dir and removes it on shutdown

	java     javaInstall
	dir      string
	addr     string
	ctlPort  int // the controller listener's port
	props    string
	format   []string // extra arguments of the storage formatter, such as --add-scram
	log4j    string
	cdsWrite string // archive this run writes at exit, renamed into the cache on stop

	mu   sync.Mutex
	proc *process
}

// Addr returns the broker's bootstrap address, 127.0.0.1:port. It stays the
// same across Stop and Start.
func (b *Broker) Addr() string { return b.addr }

// LogFile returns the path of the broker's log, for a test that wants to show
// or search it.
func (b *Broker) LogFile() string { return filepath.Join(b.dir, "broker.log") }

// Stop shuts the broker down (SIGTERM to its process group, SIGKILL after 30 s)
// and returns when the JVM has exited. Its data stays, so Start brings back the
// same topics and committed offsets. Stopping a stopped broker does nothing.
func (b *Broker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopLocked()
}

// Start starts a stopped broker again on the same ports and data directory and
// waits until it answers; the test fails if it does not within 90 s.
func (b *Broker) Start() {
	if b.t != nil {
		b.t.Helper()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	began := time.Now()
	if err := b.startLocked(); err != nil {
		b.fatalf("kafkatest: restart broker: %v", err)
		return
	}
	b.logf("kafkatest: broker %s restarted in %s", b.addr, time.Since(began).Round(time.Millisecond))
}

func (b *Broker) fatalf(format string, args ...any) {
	if b.t != nil {
		b.t.Helper()
		b.t.Fatalf(format, args...)
	}
}

func (b *Broker) logf(format string, args ...any) {
	if b.t != nil {
		b.t.Helper()
		b.t.Logf(format, args...)
	}
}

// shutdown is Main's last word: stop, and delete what nobody else will.
func (b *Broker) shutdown() {
	b.Stop()
	if b.shared {
		os.RemoveAll(b.dir)
	}
}

// StartKafka starts a broker for this test alone, for tests that stop and
// restart it; other tests share one broker through Kafka. The broker is
// stopped and its directory removed when the test ends. Unlike Kafka, it
// ignores KAFKA_BROKERS: an external cluster cannot be restarted by a test.
func StartKafka(t testing.TB) *Broker {
	t.Helper()
	java := requireKafka(t)
	b, err := newBroker(java, t.TempDir())
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	b.t = t
	// Registered before the start so that a broker that started but never
	// became ready is stopped too.
	t.Cleanup(b.Stop)
	began := time.Now()
	if err := b.formatStorage(); err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	formatted := time.Since(began)
	b.mu.Lock()
	err = b.startLocked()
	b.mu.Unlock()
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	t.Logf("kafkatest: broker %s ready in %s (storage format %s); log %s",
		b.addr, time.Since(began).Round(time.Millisecond), formatted.Round(time.Millisecond), b.LogFile())
	return b
}

var shared struct {
	once sync.Once
	b    *Broker
	err  error
}

// Kafka returns the bootstrap address of a Kafka cluster for the test: the
// value of KAFKA_BROKERS when set (it may be a comma-separated list), else the
// address of one broker shared by all tests of this test binary, started by the
// first call and stopped by Main. Tests that share it should use topic names of
// their own (see Topic).
func Kafka(t testing.TB) string {
	t.Helper()
	if addr := os.Getenv("KAFKA_BROKERS"); addr != "" {
		return addr
	}
	if !mainActive.Load() {
		t.Fatalf("kafkatest.Kafka needs `func TestMain(m *testing.M) { kafkatest.Main(m) }` in this package, " +
			"so that the shared broker is stopped when the tests end")
	}
	java := requireKafka(t)
	shared.once.Do(func() {
		began := time.Now()
		shared.b, shared.err = startShared(java, nil)
		if shared.err == nil {
			t.Logf("kafkatest: shared broker %s ready in %s; log %s",
				shared.b.addr, time.Since(began).Round(time.Millisecond), shared.b.LogFile())
		}
	})
	if shared.err != nil {
		t.Fatalf("kafkatest: shared broker: %v", shared.err)
	}
	return shared.b.addr
}

// startShared starts a broker in a new directory that it removes on
// shutdown; setup, when set, adds to its configuration before the format.
func startShared(java javaInstall, setup func(*Broker) error) (*Broker, error) {
	dir, err := os.MkdirTemp("", "kafkatest-broker-")
	if err != nil {
		return nil, err
	}
	b, err := newBroker(java, dir)
	if err == nil && setup != nil {
		err = setup(b)
	}
	if err == nil {
		b.shared = true
		err = b.formatStorage()
	}
	if err == nil {
		b.mu.Lock()
		err = b.startLocked()
		b.mu.Unlock()
	}
	if err != nil {
		if b != nil {
			b.Stop()
		}
		os.RemoveAll(dir)
		return nil, err
	}
	return b, nil
}

// newBroker writes the broker's configuration into dir; nothing runs yet.
func newBroker(java javaInstall, dir string) (*Broker, error) {
	brokerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	controllerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	b := &Broker{
		java:    java,
		dir:     dir,
		addr:    "127.0.0.1:" + strconv.Itoa(brokerPort),
		ctlPort: controllerPort,
		props:   filepath.Join(dir, "server.properties"),
		log4j:   filepath.Join(dir, "log4j2.xml"),
	}
	fill := strings.NewReplacer(
		"@BROKER_PORT@", strconv.Itoa(brokerPort),
		"@CONTROLLER_PORT@", strconv.Itoa(controllerPort),
		"@DATA_DIR@", filepath.Join(dir, "data"),
		"@LOG_FILE@", b.LogFile(),
	)
	if err := os.WriteFile(b.props, []byte(fill.Replace(brokerPropertiesTemplate)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(b.log4j, []byte(fill.Replace(log4jTemplate)), 0o644); err != nil {
		return nil, err
	}
	return b, nil
}

// format initialises the data directory as a new single-voter KRaft cluster
// with a random id, as `kafka-storage.sh format --standalone` does.
func (b *Broker) formatStorage() error {
	id, err := randomClusterID()
	if err != nil {
		return err
	}
	args := append([]string{}, toolJVM...)
	args = append(args, cdsUse(b.java)...)
	args = append(args,
		"-Dlog4j2.configurationFile="+b.log4j,
		"-cp", filepath.Join(b.java.libs, "*"),
		"kafka.tools.StorageTool", "format", "--standalone", "--cluster-id", id, "--config", b.props)
	args = append(args, b.format...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.java.java, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("format kafka storage in %s: %v\n%s", b.dir, err, out)
	}
	return nil
}

// randomClusterID makes a Kafka Uuid string: 16 random bytes, URL-safe base64
// without padding. Kafka also rejects ids starting with '-' (they would read
// as command-line flags), so those are drawn again.
func randomClusterID() (string, error) {
	for {
		var u [16]byte
		if _, err := rand.Read(u[:]); err != nil {
			return "", err
		}
		id := base64.RawURLEncoding.EncodeToString(u[:])
		if !strings.HasPrefix(id, "-") {
			return id, nil
		}
	}
}

// startLocked runs the broker JVM and waits until it lists itself in metadata.
func (b *Broker) startLocked() error {
	if b.proc != nil {
		select {
		case <-b.proc.exited():
		default:
			return nil // already running
		}
	}
	cds, write := cdsArgs(b.java)
	b.cdsWrite = write
	argv := append([]string{b.java.java}, brokerJVM...)
	argv = append(argv, cds...)
	argv = append(argv,
		"-Dlog4j2.configurationFile="+b.log4j,
		"-cp", filepath.Join(b.java.libs, "*"),
		"kafka.Kafka", b.props)
	b.proc = &process{
		name:    "kafka broker",
		argv:    argv,
		outPath: filepath.Join(b.dir, "broker.out"),
		logPath: b.LogFile(),
	}
	if err := b.proc.start(); err != nil {
		return err
	}
	register(b)
	if err := b.waitReady(); err != nil {
		b.stopLocked()
		return err
	}
	return nil
}

func (b *Broker) stopLocked() {
	if b.proc == nil {
		return
	}
	b.proc.stop(stopGrace)
	unregister(b)
	b.keepCDS()
}

// waitReady polls the broker with franz-go until its metadata lists a broker,
// which in KRaft mode means the broker registered with the controller and was
// unfenced: before that, produce and group requests would fail.
func (b *Broker) waitReady() error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.DialTimeout(time.Second))
	if err != nil {
		return err
	}
	adm := kadm.NewClient(cl)
	defer adm.Close()
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	exited := b.proc.exited()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		brokers, err := adm.ListBrokers(ctx)
		cancel()
		if err == nil && len(brokers) > 0 {
			return nil
		}
		if err == nil {
			err = errors.New("metadata lists no broker yet")
		}
		select {
		case <-exited:
			return b.proc.failure("kafka broker %s exited before it was ready: %v", b.addr, b.proc.exitErr())
		case <-deadline.C:
			return b.proc.failure("kafka broker %s not ready within %s: %v", b.addr, readyTimeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Class data sharing: the broker JVM loads about 9,000 classes at start. A
// dynamic CDS archive of them, written by one broker's JVM when it exits and
// mapped by every later one, takes about a second off each start (3.4 s to
// 2.3 s here). The archive is only valid for the JVM and jars that wrote it,
// so it lives in the jar cache and is named after the Java version; a stale
// one is ignored by the JVM (-Xshare:auto, the default), never fatal.
var cdsClaimed atomic.Bool

func cdsPath(java javaInstall) string {
	name := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '.' {
			return r
		}
		return '_'
	}, java.version)
	return filepath.Join(kafkaHome(), "cds", "jdk-"+name+".jsa")
}

// cdsUse returns the flag that maps an existing archive, if there is one.
func cdsUse(java javaInstall) []string {
	if _, err := os.Stat(cdsPath(java)); err == nil {
		return []string{"-XX:SharedArchiveFile=" + cdsPath(java)}
	}
	return nil
}

// cdsArgs returns the CDS flags for a broker start and, when this JVM is the
// one (per test binary) that writes the missing archive, the temporary path it
// writes to. Two binaries may both write one; each renames its own file into
// place, and either result is valid.
func cdsArgs(java javaInstall) (args []string, writes string) {
	if use := cdsUse(java); use != nil {
		return use, ""
	}
	if !cdsClaimed.CompareAndSwap(false, true) {
		return nil, ""
	}
	final := cdsPath(java)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return nil, "" // a read-only cache only costs start time
	}
	// A binary killed before its broker exited leaves a partial 50 MiB file.
	stale, _ := filepath.Glob(final + ".tmp-*")
	for _, f := range stale {
		if st, err := os.Stat(f); err == nil && time.Since(st.ModTime()) > time.Hour {
			os.Remove(f)
		}
	}
	tmp := fmt.Sprintf("%s.tmp-%d", final, os.Getpid())
	return []string{"-XX:ArchiveClassesAtExit=" + tmp}, tmp
}

// keepCDS moves an archive written at exit into place.
func (b *Broker) keepCDS() {
	if b.cdsWrite == "" {
		return
	}
	tmp := b.cdsWrite
	b.cdsWrite = ""
	if st, err := os.Stat(tmp); err == nil && st.Size() > 0 {
		if os.Rename(tmp, cdsPath(b.java)) == nil {
			return
		}
	}
	os.Remove(tmp)
	cdsClaimed.Store(false) // let a later start try again
}
