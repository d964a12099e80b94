package extjob

import (
	"errors"
	"fmt"
)

// ProtocolError reports input from the server side (the payload or a line the
// server wrote) that breaks the spec. Requirement names the rule broken.
type ProtocolError struct {
	Input       string // what was read: "payload", "welcome", "server line", ...
	Field       string // the offending field, if one
	Requirement string // for example "PAY-2"
	Code        string // CTRL-5 style code: invalid_payload, invalid_json, invalid_message
	Problem     string // what is wrong, for people
}

func (e *ProtocolError) Error() string {
	where := e.Input
	if e.Field != "" {
		where += ": " + e.Field
	}
	return fmt.Sprintf("%s: %s (%s)", where, e.Problem, e.Requirement)
}

var (
	// ErrFinished is returned by calls made after the terminal message
	// (LIFE-4: nothing is sent after completed or failed).
	ErrFinished = errors.New("extjob: the job already sent its terminal message (LIFE-4)")

	// ErrUndelivered is returned by Complete and Fail when the server stayed
	// away for the whole reconnect window and there was no spool file to
	// write the result to (RECONNECT-3).
	ErrUndelivered = errors.New("extjob: the terminal message could not be delivered (RECONNECT-3)")

	// ErrNotOffered is returned by Checkpoint when the server did not offer
	// the checkpoint extension (NEG-2).
	ErrNotOffered = errors.New("extjob: the server did not offer this extension (NEG-2)")

	// ErrTooLarge is wrapped by the error of a call whose message would be
	// longer than the server's maxLineBytes (LIMIT-1).
	ErrTooLarge = errors.New("extjob: message too large (LIMIT-1)")
)

// Permanent marks err as not worth retrying: Fail sends it with
// retryable false, so the server does not start another attempt (CKPT-4).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// CancelError is the cause of the job context's cancellation when the server
// (or a SIGTERM under Run) asked the job to stop (CANCEL-3). Read it with
// context.Cause(job.Context()).
type CancelError struct {
	Reason   string // "requested", "timeout", "shutdown", "sigterm", ...
	Deadline int64  // ms the server waits for a terminal message (CANCEL-2); 0 if unknown
}

func (e *CancelError) Error() string {
	return "extjob: cancel requested: " + e.Reason
}
