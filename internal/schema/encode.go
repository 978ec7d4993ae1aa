package schema

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/invmon/invmon/internal/rules"
)

// Encoder re-encodes JSON events in Avro or Protobuf, framed with the ids of
// schemas it registered: how the simulator and the tests produce the example
// domain in a Schema Registry format. It is safe for concurrent use once
// built.
type Encoder struct {
	format string
	topics map[string]*topicSchema
}

type topicSchema struct {
	id    int
	avro  *avro.RecordSchema
	proto protoreflect.MessageDescriptor
}

// RegisterSchemas registers, for every name, the schema file NAME.avsc
// (format avro) or NAME.proto (format protobuf) of dir as the schema of
// topic prefix+NAME, under the subject prefix+NAME-value, and returns an
// encoder for those topics. Registering a schema the subject already has
// returns its id.
func RegisterSchemas(ctx context.Context, cl *sr.Client, format string, dir fs.FS, prefix string, names ...string) (*Encoder, error) {
	e := &Encoder{format: format, topics: map[string]*topicSchema{}}
	for _, name := range names {
		topic := prefix + name
		var ext string
		var typ sr.SchemaType
		switch format {
		case rules.FormatAvro:
			ext, typ = ".avsc", sr.TypeAvro
		case rules.FormatProtobuf:
			ext, typ = ".proto", sr.TypeProtobuf
		default:
			return nil, fmt.Errorf("format %q: the simulator produces json, avro or protobuf", format)
		}
		text, err := fs.ReadFile(dir, name+ext)
		if err != nil {
			return nil, fmt.Errorf("schema of topic %s: %w", topic, err)
		}
		ts, err := e.Register(ctx, cl, topic, topic+"-value", sr.Schema{Schema: string(text), Type: typ})
		if err != nil {
			return nil, err
		}
		e.topics[topic] = ts
	}
	return e, nil
}

// Register registers s under subject and makes it the schema topic's
// events are encoded with from now on (a schema evolving mid-stream).
func (e *Encoder) Register(ctx context.Context, cl *sr.Client, topic, subject string, s sr.Schema) (*topicSchema, error) {
	ss, err := cl.CreateSchema(ctx, subject, s)
	if err != nil {
		return nil, fmt.Errorf("register schema of %s: %w", subject, err)
	}
	ts := &topicSchema{id: ss.ID}
	switch s.Type {
	case sr.TypeAvro:
		d, err := newAvro(s.Schema, nil)
		if err != nil {
			return nil, err
		}
		ts.avro = d.record
	case sr.TypeProtobuf:
		d, err := newProtobuf(s.Schema, nil)
		if err != nil {
			return nil, err
		}
		if ts.proto, err = d.message(nil); err != nil {
			return nil, err
		}
	}
	if e.topics == nil {
		e.topics = map[string]*topicSchema{}
	}
	e.topics[topic] = ts
	return ts, nil
}

// ID returns the schema id topic's events are encoded with.
func (e *Encoder) ID(topic string) int { return e.topics[topic].id }

// Encode turns a JSON event of topic into its framed Avro or Protobuf
// value. Times in RFC 3339 become timestamps, enum names enum values.
func (e *Encoder) Encode(topic string, jsonValue []byte) ([]byte, error) {
	ts := e.topics[topic]
	if ts == nil {
		return nil, fmt.Errorf("no schema registered for topic %s", topic)
	}
	switch {
	case ts.avro != nil:
		dec := json.NewDecoder(bytes.NewReader(jsonValue))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			return nil, err
		}
		native, err := avroNative(ts.avro, m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", topic, err)
		}
		payload, err := avro.Marshal(ts.avro, native)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", topic, err)
		}
		b, err := header.AppendEncode(nil, ts.id, nil)
		if err != nil {
			return nil, err
		}
		return append(b, payload...), nil
	case ts.proto != nil:
		m := dynamicpb.NewMessage(ts.proto)
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(jsonValue, m); err != nil {
			return nil, fmt.Errorf("%s: %w", topic, err)
		}
		b, err := header.AppendEncode(nil, ts.id, []int{0})
		if err != nil {
			return nil, err
		}
		return proto.MarshalOptions{}.MarshalAppend(b, m)
	}
	return nil, fmt.Errorf("topic %s: no schema", topic)
}

// avroNative converts a JSON-decoded record into the Go values hamba/avro
// encodes: numbers by the field's type, RFC 3339 strings for timestamps.
func avroNative(rs *avro.RecordSchema, m map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(rs.Fields()))
	for _, f := range rs.Fields() {
		v, ok := m[f.Name()]
		if !ok {
			if f.HasDefault() {
				continue
			}
			return nil, fmt.Errorf("field %q missing", f.Name())
		}
		nv, err := avroNativeValue(f.Type(), v)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.Name(), err)
		}
		out[f.Name()] = nv
	}
	return out, nil
}

func avroNativeValue(s avro.Schema, v any) (any, error) {
	s = deref(s)
	if ls, ok := s.(avro.LogicalTypeSchema); ok && ls.Logical() != nil {
		switch ls.Logical().Type() {
		case avro.TimestampMillis, avro.TimestampMicros:
			str, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("want an RFC 3339 time, got %T", v)
			}
			return time.Parse(time.RFC3339Nano, str)
		}
	}
	switch s.Type() {
	case avro.Long:
		n, ok := v.(json.Number)
		if !ok {
			return nil, fmt.Errorf("want a number, got %T", v)
		}
		return n.Int64()
	case avro.Int:
		n, ok := v.(json.Number)
		if !ok {
			return nil, fmt.Errorf("want a number, got %T", v)
		}
		i, err := n.Int64()
		return int(i), err
	case avro.Double, avro.Float:
		n, ok := v.(json.Number)
		if !ok {
			return nil, fmt.Errorf("want a number, got %T", v)
		}
		return n.Float64()
	}
	return v, nil
}
