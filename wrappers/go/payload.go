package extjob

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// Defaults of section 12 that a worker applies when the payload is silent.
const (
	DefaultHeartbeatIntervalMs = 5000     // HB-2, with a v1 server
	DefaultReconnectWindowMs   = 60000    // RECONNECT-3
	DefaultMaxLineBytes        = 16 << 20 // LIMIT-1
	MaxPayloadBytes            = 16 << 20 // LIMIT-2
)

// Payload is what the server hands the worker on standard input (PAY-2,
// PAY-3). ReadPayload fills in the defaults of section 12 for the fields the
// payload leaves out; a Payload built by hand for StartWith should do the
// same (a zero ReconnectWindowMs means "give up at once").
type Payload struct {
	JobID      string
	Name       string
	Data       json.RawMessage // any JSON value; {} when it came from the environment (ENV-2)
	SocketPath string          // a Unix socket path or tcp://HOST:PORT (TRANS-1)

	ProtocolVersion     int64    // 1 from an extended server, 0 from a v1 server
	Features            []string // extensions offered (NEG-1); none from a v1 server
	HeartbeatIntervalMs int64
	HeartbeatTimeoutMs  int64 // 0 when the server did not say
	ReconnectWindowMs   int64
	MaxLineBytes        int64
	Token               string          // the attempt's secret (AUTH-1)
	Attempt             int64           // 1 for the first attempt (CKPT-3)
	MaxAttempts         int64           // 0 when the server did not say
	SpoolPath           string          // where to spool an undeliverable result (SPOOL-1)
	Checkpoint          json.RawMessage // the previous attempt's last checkpoint; nil when none (CKPT-2)
}

// ReadPayload reads the payload from stdin (to the first newline or end of
// file, PAY-1) and takes jobId, name and socketPath that it lacks from the
// environment, EXTJOB_* first, then DONKEYLABS_* (ENV-2). getenv is usually
// os.Getenv. A missing or malformed payload is a *ProtocolError that names the
// field (PAY-6).
func ReadPayload(stdin io.Reader, getenv func(string) string) (*Payload, error) {
	line, err := readPayloadLine(stdin)
	if err != nil {
		return nil, err
	}
	return ParsePayload(line, getenv)
}

func readPayloadLine(stdin io.Reader) ([]byte, error) {
	r := bufio.NewReader(io.LimitReader(stdin, MaxPayloadBytes+2))
	line, err := r.ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("payload: reading standard input: %w", err)
	}
	if len(bytes.TrimRight(line, "\r\n")) > MaxPayloadBytes {
		return nil, payloadError("", "LIMIT-2", fmt.Sprintf("larger than %d bytes", MaxPayloadBytes))
	}
	return line, nil
}

func payloadError(field, requirement, problem string) *ProtocolError {
	return &ProtocolError{Input: "payload", Field: field, Requirement: requirement, Code: "invalid_payload", Problem: problem}
}

// ParsePayload parses one payload line (which may be empty: then everything
// comes from the environment, ENV-2) and checks it against PAY-2 and PAY-3.
func ParsePayload(line []byte, getenv func(string) string) (*Payload, error) {
	o := object{}
	stdinEmpty := len(bytes.TrimSpace(line)) == 0
	if !stdinEmpty {
		var err error
		if o, err = decodePayloadObject(line); err != nil {
			return nil, payloadError("", "PAY-6", err.Error())
		}
	}
	p := &Payload{
		HeartbeatIntervalMs: DefaultHeartbeatIntervalMs,
		ReconnectWindowMs:   DefaultReconnectWindowMs,
		MaxLineBytes:        DefaultMaxLineBytes,
		Attempt:             1,
	}
	fromEnv := stdinEmpty
	for _, f := range []struct {
		key, env string
		dst      *string
	}{
		{"jobId", "JOB_ID", &p.JobID},
		{"name", "JOB_NAME", &p.Name},
		{"socketPath", "SOCKET_PATH", &p.SocketPath},
	} {
		if o.has(f.key) {
			s, ok := o.str(f.key)
			if !ok {
				return nil, payloadError(f.key, "PAY-2", "must be a string")
			}
			*f.dst = s
			continue
		}
		*f.dst = firstNonEmpty(getenv("EXTJOB_"+f.env), getenv("DONKEYLABS_"+f.env))
		if *f.dst == "" && f.key == "socketPath" {
			if port := getenv("DONKEYLABS_TCP_PORT"); port != "" {
				*f.dst = "tcp://127.0.0.1:" + port
			}
		}
		if *f.dst == "" {
			return nil, payloadError(f.key, "PAY-2", fmt.Sprintf("missing: not in the stdin payload, EXTJOB_%s or DONKEYLABS_%s", f.env, f.env))
		}
		fromEnv = true
	}
	if err := checkIdentity(p); err != nil {
		return nil, err
	}
	switch data, ok := o["data"]; {
	case ok:
		p.Data = data
	case fromEnv:
		p.Data = json.RawMessage("{}") // ENV-2
	default:
		return nil, payloadError("data", "PAY-2", "missing")
	}
	if err := parseExtensions(o, p); err != nil {
		return nil, err
	}
	return p, nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

func checkIdentity(p *Payload) error {
	if n := runeLen(p.JobID); n < 1 || n > 256 {
		return payloadError("jobId", "PAY-2", "must be 1 to 256 characters")
	}
	if n := runeLen(p.Name); n < 1 || n > 256 {
		return payloadError("name", "PAY-2", "must be 1 to 256 characters")
	}
	if _, _, err := socketAddress(p.SocketPath); err != nil {
		return payloadError("socketPath", "TRANS-1", err.Error())
	}
	return nil
}

// socketAddress splits socketPath into a net.Dial network and address
// (TRANS-1).
func socketAddress(socketPath string) (network, address string, err error) {
	if rest, ok := strings.CutPrefix(socketPath, "tcp://"); ok {
		host, port, err := net.SplitHostPort(rest)
		if err != nil || host == "" {
			return "", "", fmt.Errorf("%q is not tcp://HOST:PORT", socketPath)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("%q has no valid port", socketPath)
		}
		return "tcp", rest, nil
	}
	if socketPath == "" || (strings.Contains(socketPath, ":") && !strings.HasPrefix(socketPath, "/") && !strings.HasPrefix(socketPath, "./")) {
		return "", "", fmt.Errorf("%q is neither a Unix socket path nor tcp://HOST:PORT", socketPath)
	}
	return "unix", socketPath, nil
}

// parseExtensions reads the optional fields of PAY-3; null means absent
// (MSG-2).
func parseExtensions(o object, p *Payload) error {
	integers := []struct {
		key, requirement string
		min              int64
		dst              *int64
	}{
		{"protocolVersion", "NEG-1", 1, &p.ProtocolVersion},
		{"heartbeatIntervalMs", "HB-1", 10, &p.HeartbeatIntervalMs},
		{"heartbeatTimeoutMs", "STALE-1", 30, &p.HeartbeatTimeoutMs},
		{"reconnectWindowMs", "RECONNECT-3", 0, &p.ReconnectWindowMs},
		{"maxLineBytes", "LIMIT-1", 65536, &p.MaxLineBytes},
		{"attempt", "CKPT-3", 1, &p.Attempt},
		{"maxAttempts", "CKPT-3", 1, &p.MaxAttempts},
	}
	for _, f := range integers {
		if !o.has(f.key) {
			continue
		}
		n, ok := o.integer(f.key)
		if !ok || n < f.min {
			return payloadError(f.key, f.requirement, fmt.Sprintf("must be an integer >= %d", f.min))
		}
		*f.dst = n
	}
	if o.has("protocolVersion") && p.ProtocolVersion != 1 {
		return payloadError("protocolVersion", "NEG-1", "must be 1")
	}
	if o.has("features") {
		features, ok := o.strings("features")
		if !ok {
			return payloadError("features", "NEG-1", "must be an array of distinct non-empty strings")
		}
		p.Features = features
	}
	if o.has("token") {
		token, ok := o.str("token")
		if n := runeLen(token); !ok || n < 16 || n > 256 {
			return payloadError("token", "AUTH-1", "must be a string of 16 to 256 characters")
		}
		if !o.has("protocolVersion") || !o.has("features") {
			return payloadError("token", "PAY-3", "needs protocolVersion and features beside it")
		}
		p.Token = token
	}
	if o.has("spoolPath") {
		spool, ok := o.str("spoolPath")
		if !ok || spool == "" {
			return payloadError("spoolPath", "SPOOL-1", "must be a non-empty string")
		}
		p.SpoolPath = spool
	}
	if o.has("checkpoint") {
		p.Checkpoint = o["checkpoint"]
	}
	return nil
}
