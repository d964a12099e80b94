package extjob

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// encodeValue marshals v as compact JSON that follows FRAME-2 whatever v
// holds: control characters escaped, no NaN or Infinity (an error), valid
// UTF-8 only and no unpaired surrogate escapes (both replaced with U+FFFD,
// WRAP-3).
func encodeValue(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // <, > and & are fine on this wire, and shorter raw
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	// encoding/json replaces invalid UTF-8 in Go strings, but passes the
	// bytes of a json.RawMessage or a custom MarshalJSON through: decoding and
	// encoding again repairs both, since the decoder turns invalid UTF-8 and
	// lone surrogate escapes into U+FFFD.
	if utf8.Valid(b) && !bytes.Contains(b, []byte(`\ud`)) && !bytes.Contains(b, []byte(`\uD`)) {
		return b, nil
	}
	var repaired any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&repaired); err != nil {
		return nil, err
	}
	return encodeValue(repaired)
}

// encodeObject is encodeValue for the data of progress and log, which must be
// an object (MSG-4, MSG-6); nil means no data.
func encodeObject(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	b, err := encodeValue(v)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(b, []byte("null")) {
		return nil, nil
	}
	if b[0] != '{' {
		return nil, fmt.Errorf("data must encode to a JSON object, not %.20s", b)
	}
	return b, nil
}

// fields builds the part of a message after its envelope: `"k":v,"k2":v2`.
type fields struct{ b []byte }

func (f *fields) raw(key string, value []byte) {
	if len(f.b) > 0 {
		f.b = append(f.b, ',')
	}
	f.b = strconv.AppendQuote(f.b, key) // keys are ASCII names
	f.b = append(append(f.b, ':'), value...)
}

func (f *fields) str(key, value string) {
	b, _ := encodeValue(value) // a string always encodes
	f.raw(key, b)
}

// maxTimestampDigits bounds the width of a timestamp (2^53 - 1 has 16
// digits), so the size of an unsequenced line is known before it is stamped.
const maxTimestampDigits = 16

// line assembles one message line with its trailing newline (FRAME-1).
// seq 0 means the message is not sequenced.
func line(kind string, jobID []byte, timestamp, seq int64, body []byte) []byte {
	b := make([]byte, 0, len(body)+len(jobID)+64)
	b = append(b, `{"type":"`...)
	b = append(b, kind...)
	b = append(b, `","jobId":`...)
	b = append(b, jobID...)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, timestamp, 10)
	if seq > 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, seq, 10)
	}
	if len(body) > 0 {
		b = append(append(b, ','), body...)
	}
	return append(b, "}\n"...)
}

// unstampedLen is the length (without its newline) that an unsequenced line
// of body has at most once it is stamped.
func unstampedLen(kind string, jobID, body []byte) int {
	return len(line(kind, jobID, 0, 0, body)) - len("0\n") + maxTimestampDigits
}

// clock stamps messages with wall-clock milliseconds that never decrease
// (TIME-1), even when the system clock steps back.
type clock struct {
	mu   sync.Mutex
	now  func() time.Time
	last int64
}

func (c *clock) stamp() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	ms := c.now().UnixMilli()
	if ms < c.last {
		ms = c.last
	}
	c.last = ms
	return ms
}
