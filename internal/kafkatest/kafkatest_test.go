package kafkatest_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/invmon/invmon/internal/kafkatest"
)

// The leak check runs after Wrap has stopped the brokers and Alertmanagers, so
// it also proves that a stopped peer leaves no goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(kafkatest.Wrap(m)) }

// The jar cache is named after the version on both sides; a mismatch would make
// every test skip (or fail under CI) with "jars not found".
func TestPomVersionMatches(t *testing.T) {
	pom, err := os.ReadFile("../../tools/kafka/pom.xml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<kafka.version>([^<]+)</kafka.version>`).FindSubmatch(pom)
	if m == nil {
		t.Fatal("tools/kafka/pom.xml has no <kafka.version>")
	}
	if got := string(m[1]); got != kafkatest.KafkaVersion {
		t.Fatalf("tools/kafka/pom.xml kafka.version = %s, kafkatest.KafkaVersion = %s", got, kafkatest.KafkaVersion)
	}
}

func newClient(t *testing.T, brokers string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(kafkatest.Seeds(brokers)...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(t *testing.T, cl *kgo.Client, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "acct-%d", i), Value: fmt.Appendf(nil, `{"n":%d}`, i)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
}

// consume reads n records; it fails the test if they do not arrive in 30 s.
func consume(t *testing.T, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), n, ctx.Err())
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s[%d]: %v", topic, p, err) })
		got = append(got, fs.Records()...)
	}
	return got
}

func TestRealBrokerRoundTrip(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	topic := kafkatest.Topic(t, "roundtrip")
	kafkatest.CreateTopics(t, brokers, 3, topic)

	produce(t, newClient(t, brokers), topic, 30)

	group := kafkatest.Topic(t, "group")
	cons := newClient(t, brokers, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	got := consume(t, cons, 30)
	if len(got) != 30 {
		t.Fatalf("got %d records, want 30", len(got))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cons.CommitRecords(ctx, got...); err != nil {
		t.Fatalf("commit: %v", err)
	}
	offsets, err := kadm.NewClient(newClient(t, brokers)).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	offsets.Each(func(o kadm.OffsetResponse) { committed += o.At })
	if committed != 30 {
		t.Fatalf("committed offsets sum to %d, want 30 (%v)", committed, offsets)
	}
}

// A record produced by librdkafka (kcat) decodes with franz-go and lands in the
// partition franz-go's default partitioner picks for the same key.
func TestKcatProduceReadBack(t *testing.T) {
	brokers := kafkatest.Kafka(t)
	topic := kafkatest.Topic(t, "kcat")
	kafkatest.CreateTopics(t, brokers, 4, topic)

	records := []kafkatest.KeyValue{
		{Key: "acct-1", Value: `{"payment_id":"p1","note":"a:b"}`},
		{Key: "acct-2", Value: "two\nlines"},
		{Key: "acct-3", Value: ""},
	}
	kafkatest.KcatProduce(t, brokers, topic, records)

	// Where franz-go puts the same keys, produced to the same topic.
	fr := newClient(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[string]int32{}
	for _, r := range records {
		res, err := fr.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(r.Key), Value: []byte("franz")}).First()
		if err != nil {
			t.Fatal(err)
		}
		want[r.Key] = res.Partition
	}

	cons := newClient(t, brokers, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := map[string]*kgo.Record{}
	for _, r := range consume(t, cons, 2*len(records)) {
		if string(r.Value) != "franz" {
			got[string(r.Key)] = r
		}
	}
	for _, r := range records {
		g, ok := got[r.Key]
		switch {
		case !ok:
			t.Errorf("key %q: not read back", r.Key)
		case string(g.Value) != r.Value:
			t.Errorf("key %q: value %q, want %q", r.Key, g.Value, r.Value)
		case g.Partition != want[r.Key]:
			t.Errorf("key %q: kcat put it in partition %d, franz-go in %d", r.Key, g.Partition, want[r.Key])
		}
	}
}

func TestBrokerStopStart(t *testing.T) {
	b := kafkatest.StartKafka(t)
	topic := "restart"
	kafkatest.CreateTopics(t, b.Addr(), 2, topic)
	produce(t, newClient(t, b.Addr()), topic, 10)

	b.Stop()
	b.Stop() // idempotent
	began := time.Now()
	b.Start()
	t.Logf("restart took %s", time.Since(began).Round(time.Millisecond))

	// The data directory survived: the records are still there, on the same
	// address, and the broker takes new writes.
	cl := newClient(t, b.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	produce(t, newClient(t, b.Addr()), topic, 1)
	if got := consume(t, cl, 11); len(got) != 11 {
		t.Fatalf("after restart read %d records, want 11", len(got))
	}
}

// postAlert sends one alert to Alertmanager the way Prometheus does.
func postAlert(t *testing.T, amURL string, labels map[string]string, startsAt, endsAt time.Time) {
	t.Helper()
	body, _ := json.Marshal([]map[string]any{{
		"labels":       labels,
		"annotations":  map[string]string{"summary": "harness check"},
		"startsAt":     startsAt,
		"endsAt":       endsAt,
		"generatorURL": "http://127.0.0.1/api/v1/violations",
	}})
	resp, err := http.Post(amURL+"/api/v2/alerts", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /api/v2/alerts: %s", resp.Status)
	}
}

func TestAlertmanagerToWebhook(t *testing.T) {
	recv := kafkatest.NewWebhookReceiver(t)
	am := kafkatest.StartAlertmanager(t, recv.URL())
	defer http.DefaultClient.CloseIdleConnections()

	labels := map[string]string{"alertname": "LedgerEntryMissing", "severity": "page"}
	start := time.Now().Add(-time.Minute)
	postAlert(t, am.URL(), labels, start, time.Now().Add(4*time.Minute))
	firing := recv.WaitFor(t, 15*time.Second, func(a kafkatest.WebhookAlert) bool {
		return a.Status == "firing" && a.Labels["alertname"] == "LedgerEntryMissing"
	})
	if firing.Labels["severity"] != "page" || firing.Annotations["summary"] != "harness check" {
		t.Errorf("firing alert = %v %v", firing, firing.Annotations)
	}

	// Resolve it as the monitor will: endsAt in the past.
	postAlert(t, am.URL(), labels, start, time.Now())
	recv.WaitFor(t, 15*time.Second, func(a kafkatest.WebhookAlert) bool {
		return a.Status == "resolved" && a.Labels["alertname"] == "LedgerEntryMissing"
	})

	// An outage: the restarted Alertmanager listens on the same URL.
	am.Stop()
	am.Start()
	postAlert(t, am.URL(), map[string]string{"alertname": "AfterRestart", "severity": "ticket"}, time.Now(), time.Now().Add(4*time.Minute))
	recv.WaitFor(t, 15*time.Second, func(a kafkatest.WebhookAlert) bool { return a.Labels["alertname"] == "AfterRestart" })

	for _, p := range recv.Payloads() {
		if p.Version != "4" || p.Receiver != "webhook" {
			t.Errorf("payload version %q receiver %q", p.Version, p.Receiver)
		}
	}
}

func TestWebhookReceiverTimeoutListsAlerts(t *testing.T) {
	recv := kafkatest.NewWebhookReceiver(t)
	body := `{"version":"4","status":"firing","receiver":"r","alerts":[{"status":"firing","labels":{"alertname":"X"}}]}`
	resp, err := http.Post(recv.URL(), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()

	ft := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		recv.WaitFor(ft, 50*time.Millisecond, func(a kafkatest.WebhookAlert) bool { return false })
	}()
	<-done
	if !strings.Contains(ft.msg, `alertname="X"`) {
		t.Fatalf("timeout message does not list the received alert:\n%s", ft.msg)
	}
	if got := recv.Alerts(); len(got) != 1 || got[0].Labels["alertname"] != "X" {
		t.Fatalf("Alerts() = %v", got)
	}
}

// fakeT captures a Fatalf and ends the goroutine like testing does.
type fakeT struct {
	testing.TB
	msg string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestFake(t *testing.T) {
	addr := kafkatest.Fake(t, map[string]int32{"payments": 4, "ledger": 2})
	adm := kadm.NewClient(newClient(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"payments": 4, "ledger": 2} {
		if got := len(topics[name].Partitions); got != want {
			t.Errorf("%s has %d partitions, want %d", name, got, want)
		}
	}
	kafkatest.CreateTopics(t, addr, 3, "orders")
	produce(t, newClient(t, addr), "orders", 3)
}

func TestFreePortDistinct(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := kafkatest.FreePort(t)
		if seen[p] {
			t.Fatalf("port %d returned twice", p)
		}
		seen[p] = true
	}
}

// TestSecuredAlertmanager checks the harness's TLS, client-certificate and
// basic-auth Alertmanager: it answers only a client that trusts its CA, shows
// a certificate from the client CA and sends the right password.
func TestSecuredAlertmanager(t *testing.T) {
	ca := kafkatest.NewCA(t, "test-ca")
	server := ca.Server(t, "alertmanager")
	client := ca.Client(t, "monitor")
	httpClient := func(certs []tls.Certificate, roots *x509.CertPool) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	good := httpClient([]tls.Certificate{client.Cert}, ca.Pool())
	auth := func(c *http.Client, user, pass string) *http.Client {
		return &http.Client{Timeout: c.Timeout, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context())
			r.SetBasicAuth(user, pass)
			return c.Transport.RoundTrip(r)
		})}
	}
	am := kafkatest.StartAlertmanagerWith(t, "http://127.0.0.1:1/unused", kafkatest.AlertmanagerOptions{
		TLS: &server, ClientCAFile: ca.CertFile, Users: map[string]string{"monitor": "s3cret"},
		ReadyClient: auth(good, "monitor", "s3cret"),
	})
	if !strings.HasPrefix(am.URL(), "https://") {
		t.Fatalf("URL %s is not https", am.URL())
	}
	get := func(c *http.Client) (int, error) {
		resp, err := c.Get(am.URL() + "/api/v2/status")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(auth(good, "monitor", "s3cret")); err != nil || code != http.StatusOK {
		t.Errorf("right password: %d %v, want 200", code, err)
	}
	if code, err := get(auth(good, "monitor", "wrong")); err != nil || code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d %v, want 401", code, err)
	}
	if code, err := get(good); err != nil || code != http.StatusUnauthorized {
		t.Errorf("no password: %d %v, want 401", code, err)
	}
	other := kafkatest.NewCA(t, "other-ca").Client(t, "stranger")
	if _, err := get(auth(httpClient([]tls.Certificate{other.Cert}, ca.Pool()), "monitor", "s3cret")); err == nil {
		t.Errorf("a client certificate from another CA was accepted")
	}
	if _, err := get(auth(httpClient(nil, nil), "monitor", "s3cret")); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client not trusting the CA: err %v, want a certificate error", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
