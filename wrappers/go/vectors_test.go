package extjob

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// vector is one test of schema/vectors/*.json (vectors.schema.json).
type vector struct {
	Description string            `json:"description"`
	Requirement string            `json:"requirement"`
	Valid       bool              `json:"valid"`
	Error       string            `json:"error"`
	Data        json.RawMessage   `json:"data"`
	Line        *string           `json:"line"`
	LineBase64  string            `json:"lineBase64"`
	Messages    []json.RawMessage `json:"messages"`
}

func (v vector) name() string { return v.Requirement + "/" + v.Description }

func (v vector) line(t *testing.T) []byte {
	if v.Line != nil {
		return []byte(*v.Line)
	}
	b, err := base64.StdEncoding.DecodeString(v.LineBase64)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadVectors(t *testing.T, file string) []vector {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "schema", "vectors", file))
	if err != nil {
		t.Fatalf("the shared vectors: %v", err)
	}
	var f struct{ Tests []vector }
	if err := json.Unmarshal(b, &f); err != nil || len(f.Tests) == 0 {
		t.Fatalf("%s: %v", file, err)
	}
	return f.Tests
}

// PAY-2..PAY-6: the worker accepts exactly the valid payloads (with no
// environment to fall back on) and reports the others as invalid_payload.
func TestVectorsPayloads(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, v := range loadVectors(t, "payloads.json") {
		t.Run(v.name(), func(t *testing.T) {
			p, err := ParsePayload(v.Data, noEnv)
			if v.Valid {
				if err != nil {
					t.Fatalf("valid payload refused: %v", err)
				}
				var want struct {
					JobID, Name, SocketPath string
					Data                    json.RawMessage
				}
				json.Unmarshal(v.Data, &want)
				if p.JobID != want.JobID || p.Name != want.Name || p.SocketPath != want.SocketPath || string(p.Data) != string(want.Data) {
					t.Fatalf("parsed %+v from %s", p, v.Data)
				}
				return
			}
			var perr *ProtocolError
			if !errors.As(err, &perr) || perr.Code != v.Error {
				t.Fatalf("got %v, want a ProtocolError %s", err, v.Error)
			}
			if strings.Contains(perr.Error(), "\n") {
				t.Fatalf("error spans lines (PAY-6): %q", perr.Error())
			}
		})
	}
}

// CTRL-1..CTRL-6: server messages are checked against their schemas; what
// fails is ignored by the worker (CTRL-6).
func TestVectorsServerMessages(t *testing.T) {
	for _, v := range loadVectors(t, "server-messages.json") {
		t.Run(v.name(), func(t *testing.T) {
			_, err := parseServerMessage(v.Data)
			if v.Valid != (err == nil) {
				t.Fatalf("valid=%v, got error %v", v.Valid, err)
			}
			var perr *ProtocolError
			if err != nil && (!errors.As(err, &perr) || perr.Code != v.Error) {
				t.Fatalf("got %v, want code %s", err, v.Error)
			}
		})
	}
}

// FRAME-1..FRAME-3 from the worker's side: every valid line, read back and
// encoded by this package, gives a line that follows FRAME-2 and decodes to
// the same value; the lines a server reads as invalid JSON are also what this
// package's decoder refuses.
func TestVectorsLines(t *testing.T) {
	for _, v := range loadVectors(t, "lines.json") {
		t.Run(v.name(), func(t *testing.T) {
			line := v.line(t)
			_, err := decodeObject(line)
			if v.Error == "invalid_json" {
				if !errors.Is(err, errInvalidJSON) {
					t.Fatalf("decoded a line that is not JSON: %v", err)
				}
				return
			}
			if !v.Valid {
				return // a JSON line of the wrong shape: a server-side concern
			}
			var value any
			if err := json.Unmarshal(line, &value); err != nil {
				t.Fatal(err)
			}
			encoded, err := encodeValue(value)
			if err != nil {
				t.Fatal(err)
			}
			again := checkWire(t, string(encoded))
			if !reflect.DeepEqual(again.m, value) {
				t.Fatalf("round trip changed the value: %s", encoded)
			}
		})
	}
}

// MSG-3..MSG-8, CKPT-1: every valid worker message the job code can cause is
// what the public API sends for it, over a real socket.
func TestVectorsWorkerMessagesThroughTheAPI(t *testing.T) {
	for _, v := range loadVectors(t, "worker-messages.json") {
		var want map[string]any
		json.Unmarshal(v.Data, &want)
		typ, _ := want["type"].(string)
		_, unknown := want["somethingNew"]
		if !v.Valid || unknown || want["jobId"] != "j_1" || !strings.Contains("progress log completed failed checkpoint", typ) || typ == "" {
			continue
		}
		t.Run(v.name(), func(t *testing.T) {
			peer := newPeer(t, "unix")
			p := testPayload(t, peer.socketPath, extended("heartbeatIntervalMs", 10000))
			p.JobID = "j_1"
			j := start(t, p)
			c := peer.accept()
			c.handshake(p, 0)
			c.ack(p.JobID, c.nextMessage().seq())
			done := finish(func() error { return apiCall(j, want) })
			got := c.nextMessage()
			c.ack(p.JobID, got.seq())
			if err := result(t, done); err != nil {
				t.Fatal(err)
			}
			for _, m := range []map[string]any{want, got.m} {
				for _, k := range []string{"timestamp", "seq", "stack"} {
					delete(m, k)
				}
				for k, val := range m {
					if val == nil && k != "result" && (k != "data" || m["type"] != kindCheckpoint) {
						delete(m, k) // MSG-2: null means absent
					}
				}
				if m["type"] == kindCompleted && m["result"] == nil {
					m["result"] = nil // MSG-7: absent means null
				}
			}
			if !reflect.DeepEqual(got.m, want) {
				t.Fatalf("sent %s\nwant %s", got.raw, v.Data)
			}
		})
	}
}

// apiCall makes the call of the public API that sends the message m.
func apiCall(j *Job, m map[string]any) error {
	data, hasData := m["data"]
	if !hasData {
		data = nil
	}
	message, _ := m["message"].(string)
	switch m["type"] {
	case kindProgress:
		return j.Progress(m["percent"].(float64), message, data)
	case kindLog:
		return j.Log(Level(m["level"].(string)), message, data)
	case kindCheckpoint:
		if data == nil {
			data = json.RawMessage("null")
		}
		return j.Checkpoint(data)
	case kindCompleted:
		return j.Complete(m["result"])
	default:
		err := errors.New(m["error"].(string))
		if m["retryable"] == false {
			err = Permanent(err)
		}
		return j.Fail(err)
	}
}
