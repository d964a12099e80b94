package extjob

import (
	"bufio"
	"bytes"
	"errors"
	"slices"
	"strings"
)

// serverMessage is one line the server wrote (CTRL-1..CTRL-5), checked
// against its schema.
type serverMessage struct {
	Type  string
	JobID string

	// welcome (CTRL-2)
	Features            []string
	LastSeq             int64
	HeartbeatIntervalMs int64
	// ack (CTRL-3)
	Seq int64
	// cancel (CTRL-4)
	Reason     string
	DeadlineMs int64
	// error (CTRL-5)
	Code, Message string
}

var errorCodes = []string{
	"invalid_json", "invalid_message", "line_too_long", "wrong_job",
	"auth", "unknown_type", "out_of_order", "duplicate_terminal",
}

func serverLineError(problem, code string) *ProtocolError {
	return &ProtocolError{Input: "server line", Requirement: "CTRL-1", Code: code, Problem: problem}
}

// parseServerMessage decodes and checks one server line. A private type
// (x-..., MSG-2) is valid and carries no fields; a type this version does not
// know is an error, which the caller ignores (CTRL-6).
func parseServerMessage(line []byte) (*serverMessage, error) {
	o, err := decodeObject(line)
	if errors.Is(err, errNotObject) {
		return nil, serverLineError(err.Error(), "invalid_message")
	}
	if err != nil {
		return nil, serverLineError(err.Error(), "invalid_json")
	}
	m := &serverMessage{}
	var ok bool
	if m.Type, ok = o.str("type"); !ok || m.Type == "" {
		return nil, serverLineError("type must be a non-empty string", "invalid_message")
	}
	if m.JobID, ok = o.str("jobId"); !ok || runeLen(m.JobID) < 1 || runeLen(m.JobID) > 256 {
		return nil, serverLineError("jobId must be 1 to 256 characters", "invalid_message")
	}
	if ts, ok := o.integer("timestamp"); !ok || ts < 0 {
		return nil, serverLineError("timestamp must be an integer >= 0", "invalid_message")
	}
	bad := func(problem string) (*serverMessage, error) {
		return nil, serverLineError(m.Type+": "+problem, "invalid_message")
	}
	switch {
	case strings.HasPrefix(m.Type, "x-"):
	case m.Type == "welcome":
		if v, ok := o.integer("protocolVersion"); !ok || v != 1 {
			return bad("protocolVersion must be 1")
		}
		if m.Features, ok = o.strings("features"); !ok {
			return bad("features must be an array of distinct names")
		}
		if m.LastSeq, ok = o.integer("lastSeq"); !ok || m.LastSeq < 0 {
			return bad("lastSeq must be an integer >= 0")
		}
		if m.HeartbeatIntervalMs, ok = o.integer("heartbeatIntervalMs"); !ok || m.HeartbeatIntervalMs < 10 {
			return bad("heartbeatIntervalMs must be an integer >= 10")
		}
	case m.Type == "ack":
		if m.Seq, ok = o.integer("seq"); !ok || m.Seq < 1 {
			return bad("seq must be an integer >= 1")
		}
	case m.Type == "cancel":
		if m.Reason, ok = o.str("reason"); !ok || m.Reason == "" {
			return bad("reason must be a non-empty string")
		}
		if m.DeadlineMs, ok = o.integer("deadlineMs"); !ok || m.DeadlineMs < 0 {
			return bad("deadlineMs must be an integer >= 0")
		}
	case m.Type == "error":
		if m.Code, ok = o.str("code"); !ok || !slices.Contains(errorCodes, m.Code) {
			return bad("code must be one of the CTRL-5 codes")
		}
		if m.Message, ok = o.str("message"); !ok {
			return bad("message must be a string")
		}
	default:
		return bad("unknown type")
	}
	return m, nil
}

// maxServerLine is the longest server line kept (LIMIT-3); longer lines are
// skipped in constant memory (FRAME-4).
const maxServerLine = 1 << 20

// lineReader splits a stream into lines (FRAME-1), tolerating \r\n and
// skipping empty and over-long lines.
type lineReader struct {
	r   *bufio.Reader
	max int
}

func newLineReader(r *bufio.Reader, max int) *lineReader { return &lineReader{r: r, max: max} }

func (l *lineReader) next() ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := l.r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > l.max+len("\r\n") {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if trimmed := bytes.TrimSpace(line); !tooLong && len(trimmed) > 0 {
			return trimmed, nil
		}
		line, tooLong = nil, false
	}
}
