package kafkatest

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// KeyValue is one record for KcatProduce. An empty Key is sent as an empty
// key, not a null one.
type KeyValue struct {
	Key   string
	Value string
}

// kcat reads records separated by these bytes (ASCII record and unit
// separators), so keys and values may contain newlines, colons and JSON.
const (
	kcatRecordSep = "\x1e"
	kcatKeySep    = "\x1f"
)

// KcatProduce produces records to topic with the kcat binary (librdkafka), in
// order and acknowledged by all in-sync replicas, so a test can check that its
// code reads what a client written elsewhere wrote. Records are partitioned by
// key with murmur2, the hash of the Java client and franz-go, so a key lands
// in the same partition whoever produces it.
func KcatProduce(t testing.TB, brokers, topic string, records []KeyValue) {
	t.Helper()
	bin := lookBinary(t, "kcat", "kcat", "kcat", "kafkacat")
	var in bytes.Buffer
	for i, r := range records {
		if strings.ContainsAny(r.Key, kcatRecordSep+kcatKeySep) || strings.ContainsAny(r.Value, kcatRecordSep+kcatKeySep) {
			t.Fatalf("kafkatest: record %d contains a \\x1e or \\x1f byte, which KcatProduce uses as separators", i)
		}
		in.WriteString(r.Key)
		in.WriteString(kcatKeySep)
		in.WriteString(r.Value)
		in.WriteString(kcatRecordSep)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-P", "-q",
		"-b", strings.Join(Seeds(brokers), ","),
		"-t", topic,
		// kcat parses the \xNN escapes itself.
		"-K", `\x1f`, "-D", `\x1e`,
		"-X", "partitioner=murmur2_random",
		"-X", "acks=all",
		// Exactly the given records, in order, even across retries.
		"-X", "enable.idempotence=true",
	)
	cmd.Stdin = &in
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kafkatest: kcat produce %d records to %s on %s: %v\n%s", len(records), topic, brokers, err, out)
	}
}
