package extjob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"unicode/utf8"
)

// Level is the level of a log message (MSG-6).
type Level string

// The four levels of MSG-6.
const (
	LevelDebug Level = "debug"
	LevelInfo  Level = "info"
	LevelWarn  Level = "warn"
	LevelError Level = "error"
)

// Job is one attempt of a job, as its job code sees it (WRAP-1). Its methods
// are safe to call from several goroutines (WRAP-4). Progress, Log and
// Checkpoint queue their message and return; the package delivers it, over
// as many connections as it takes.
type Job struct {
	p      *Payload
	s      *session
	ctx    context.Context
	cancel context.CancelCauseFunc

	cancelOnce sync.Once
	cancelled  chan struct{}
	reason     string // set before cancelled is closed
}

// Start reads the payload from standard input and the environment (see
// ReadPayload), connects to the server and sends started. The returned
// error is a *ProtocolError when the payload is missing or malformed.
func Start(ctx context.Context) (*Job, error) {
	p, err := ReadPayload(os.Stdin, os.Getenv)
	if err != nil {
		return nil, err
	}
	return StartWith(ctx, p)
}

// StartWith starts the job of payload p: it queues started, then heartbeats
// until the terminal message (HB-2). It connects in the background and does
// not wait for the server, so the job code can run while the server is away
// (RECONNECT-1).
func StartWith(ctx context.Context, p *Payload) (*Job, error) {
	network, address, err := socketAddress(p.SocketPath)
	if err != nil {
		return nil, payloadError("socketPath", "TRANS-1", err.Error())
	}
	j := &Job{p: p, cancelled: make(chan struct{})}
	j.ctx, j.cancel = context.WithCancelCause(ctx)
	j.s = newSession(p, network, address, j.requestCancel)
	j.s.start()
	return j, nil
}

// ID is the job's id (PAY-2).
func (j *Job) ID() string { return j.p.JobID }

// Name is the job definition's name (PAY-2).
func (j *Job) Name() string { return j.p.Name }

// Attempt is this attempt's number, 1 for the first (CKPT-3).
func (j *Job) Attempt() int64 { return j.p.Attempt }

// Data is the job's input, any JSON value (PAY-2).
func (j *Job) Data() json.RawMessage { return j.p.Data }

// Decode unmarshals the job's input into v.
func (j *Job) Decode(v any) error {
	if err := json.Unmarshal(j.p.Data, v); err != nil {
		return fmt.Errorf("extjob: decoding the job's data: %w", err)
	}
	return nil
}

// LastCheckpoint is the last checkpoint an earlier attempt saved, and
// whether there is one (CKPT-2).
func (j *Job) LastCheckpoint() (json.RawMessage, bool) {
	return j.p.Checkpoint, j.p.Checkpoint != nil
}

// Context is cancelled when the server asks the job to stop (CANCEL-3), with
// a *CancelError as its cause (context.Cause), or when the context given to
// Start is. The package never ends the job by itself: the job code decides
// how to stop, and then completes or fails.
func (j *Job) Context() context.Context { return j.ctx }

// Done is closed once a cancel has been requested (CANCEL-3).
func (j *Job) Done() <-chan struct{} { return j.cancelled }

// CancelRequested reports whether a cancel has been requested (CANCEL-3).
func (j *Job) CancelRequested() bool {
	select {
	case <-j.cancelled:
		return true
	default:
		return false
	}
}

// CancelReason is the reason of the cancel request ("requested", "timeout",
// "shutdown", "sigterm", ...), or "" when there was none.
func (j *Job) CancelReason() string {
	if !j.CancelRequested() {
		return ""
	}
	return j.reason
}

func (j *Job) requestCancel(e *CancelError) {
	j.cancelOnce.Do(func() {
		j.reason = e.Reason
		close(j.cancelled)
		j.cancel(e)
	})
}

// Progress reports percent (0 to 100) done, with an optional message ("" for
// none: the previous one still stands, MSG-4) and data, which must encode to a
// JSON object (nil for none).
func (j *Job) Progress(percent float64, message string, data any) error {
	if math.IsNaN(percent) || percent < 0 || percent > 100 {
		return fmt.Errorf("extjob: progress: percent %v is not between 0 and 100 (MSG-4)", percent)
	}
	pct, _ := encodeValue(percent)
	var msg []byte
	if message != "" {
		msg, _ = encodeValue(message)
	}
	d, err := encodeObject(data)
	if err != nil {
		return fmt.Errorf("extjob: progress: %w", err)
	}
	return j.send(newProgress(pct, msg, d))
}

// Log sends a log message at level with optional data, which must encode to
// a JSON object (nil for none; MSG-6).
func (j *Job) Log(level Level, message string, data any) error {
	switch level {
	case LevelDebug, LevelInfo, LevelWarn, LevelError:
	default:
		return fmt.Errorf("extjob: log: level %q is not debug, info, warn or error (MSG-6)", level)
	}
	d, err := encodeObject(data)
	if err != nil {
		return fmt.Errorf("extjob: log: %w", err)
	}
	var f fields
	f.str("level", string(level))
	f.str("message", message)
	if d != nil {
		f.raw("data", d)
	}
	return j.send(&outMsg{kind: kindLog, body: f.b})
}

// Debug logs at level debug; keyvals are alternating keys and values of the
// message's data, as in log/slog: job.Debug("cache", "hits", 12).
func (j *Job) Debug(message string, keyvals ...any) error {
	return j.logKV(LevelDebug, message, keyvals)
}

// Info logs at level info; see Debug for keyvals.
func (j *Job) Info(message string, keyvals ...any) error { return j.logKV(LevelInfo, message, keyvals) }

// Warn logs at level warn; see Debug for keyvals.
func (j *Job) Warn(message string, keyvals ...any) error { return j.logKV(LevelWarn, message, keyvals) }

// Error logs at level error; see Debug for keyvals.
func (j *Job) Error(message string, keyvals ...any) error {
	return j.logKV(LevelError, message, keyvals)
}

func (j *Job) logKV(level Level, message string, keyvals []any) error {
	if len(keyvals) == 0 {
		return j.Log(level, message, nil)
	}
	if len(keyvals)%2 != 0 {
		return fmt.Errorf("extjob: log: %d keyvals: want key, value pairs", len(keyvals))
	}
	data := make(map[string]any, len(keyvals)/2)
	for i := 0; i < len(keyvals); i += 2 {
		key, ok := keyvals[i].(string)
		if !ok {
			return fmt.Errorf("extjob: log: key %v is a %T, not a string", keyvals[i], keyvals[i])
		}
		data[key] = keyvals[i+1]
	}
	return j.Log(level, message, data)
}

// Checkpoint saves data, any JSON value, as the job's checkpoint; a later
// attempt finds it in LastCheckpoint (CKPT-1, CKPT-2). It returns
// ErrNotOffered when the server does not keep checkpoints.
func (j *Job) Checkpoint(data any) error {
	if !j.s.use.checkpoint {
		return fmt.Errorf("checkpoint: %w", ErrNotOffered)
	}
	d, err := encodeValue(data)
	if err != nil {
		return fmt.Errorf("extjob: checkpoint: %w", err)
	}
	var f fields
	f.raw("data", d)
	return j.send(&outMsg{kind: kindCheckpoint, body: f.b})
}

func (j *Job) send(m *outMsg) error {
	if err := j.s.enqueue(m); err != nil {
		return fmt.Errorf("%s: %w", m.kind, err)
	}
	return nil
}

// Complete ends the job with result, any JSON value (MSG-7), and waits until
// the server has it: acknowledged (REPLAY-3), written (to a v1 server) or
// spooled (SPOOL-2). A result that cannot be encoded or sent (LIMIT-1) fails
// the job instead, and Complete returns why. It returns ErrUndelivered
// when the server stayed away and there was no spool.
func (j *Job) Complete(result any) error {
	b, err := encodeValue(result)
	if err != nil {
		return j.failInstead(fmt.Sprintf("result cannot be encoded as JSON: %v", err), err)
	}
	var f fields
	f.raw("result", b)
	err = j.s.enqueue(&outMsg{kind: kindCompleted, body: f.b})
	if errors.Is(err, ErrTooLarge) {
		return j.failInstead(fmt.Sprintf("result too large: %d bytes", len(b)), err)
	}
	if err != nil {
		return fmt.Errorf("completed: %w", err)
	}
	return j.s.wait()
}

func (j *Job) failInstead(text string, cause error) error {
	if err := j.fail(text, "", true); err != nil {
		return err
	}
	return fmt.Errorf("extjob: the job failed instead of completing: %w", cause)
}

// Fail ends the job as failed with err's text and, as its stack, what the
// error can tell of where it came from (MSG-8), and waits like Complete. An
// error wrapped with Permanent asks the server not to retry (CKPT-4).
func (j *Job) Fail(err error) error {
	text := "error"
	if err != nil {
		text = err.Error()
		if text == "" {
			text = fmt.Sprintf("%T with no text", err)
		}
	}
	var permanent permanentError
	return j.fail(text, errorStack(err), !errors.As(err, &permanent))
}

// maxErrorText is what is kept of an error text too large for a line.
const maxErrorText = 4096

func (j *Job) fail(text, stack string, retryable bool) error {
	err := j.s.enqueue(failedMsg(text, stack, retryable))
	if errors.Is(err, ErrTooLarge) {
		err = j.s.enqueue(failedMsg(truncate(text, maxErrorText)+fmt.Sprintf("... (%d bytes in all)", len(text)), "", retryable))
	}
	if err != nil {
		return fmt.Errorf("failed: %w", err)
	}
	return j.s.wait()
}

func failedMsg(text, stack string, retryable bool) *outMsg {
	var f fields
	f.str("error", text)
	if stack != "" {
		f.str("stack", stack)
	}
	if !retryable {
		f.raw("retryable", []byte("false"))
	}
	return &outMsg{kind: kindFailed, body: f.b}
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// errorStack is the stack of an error. Go errors carry none unless their
// package adds one (printed by %+v); otherwise the chain of wrapped errors
// with their types is the best account of where the error came from.
func errorStack(err error) string {
	if err == nil {
		return ""
	}
	if s := fmt.Sprintf("%+v", err); s != err.Error() {
		return s
	}
	var b strings.Builder
	for e := err; e != nil; e = errors.Unwrap(e) {
		fmt.Fprintf(&b, "%T: %s\n", e, e.Error())
	}
	return b.String()
}

// outcome is the kind of terminal message sent, or "" before it.
func (j *Job) outcome() string {
	j.s.mu.Lock()
	defer j.s.mu.Unlock()
	if j.s.terminal == nil {
		return ""
	}
	return j.s.terminal.kind
}
