package extjob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// Handler is job code run by Run: its result completes the job, its error
// fails it.
type Handler func(ctx context.Context, job *Job) (any, error)

// Run runs a worker process around handler and exits (WRAP-2): it reads the
// payload, starts the job, calls handler with the job's context once started
// is written (or the first try to connect failed), completes
// the job with the result or fails it with the returned error (or the
// panic, with its stack), and exits 0 after completed and 1 after failed
// (EXIT-2), as soon as the server has acknowledged the terminal message
// (EXIT-3). A missing or malformed payload writes one line to standard error
// and exits 2 without connecting (PAY-6). SIGTERM requests a cancel
// (CANCEL-3), and a closed standard output or error never kills the process
// (WRAP-5). The handler may also call Complete or Fail itself.
func Run(handler Handler) {
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(run(context.Background(), os.Stdin, os.Getenv, os.Stderr, handler))
}

func run(ctx context.Context, stdin io.Reader, getenv func(string) string, stderr io.Writer, handler Handler) int {
	p, err := ReadPayload(stdin, getenv)
	if err != nil {
		fmt.Fprintln(stderr, "extjob:", err)
		return 2
	}
	// Caught before started can go out: a server may signal at once.
	sigterm := make(chan os.Signal, 1)
	signal.Notify(sigterm, syscall.SIGTERM)
	defer signal.Stop(sigterm)
	job, err := StartWith(ctx, p)
	if err != nil {
		fmt.Fprintln(stderr, "extjob:", err)
		return 2
	}
	go func() {
		select {
		case <-sigterm:
			job.requestCancel(&CancelError{Reason: "sigterm"})
		case <-job.s.done:
		}
	}()

	// started goes out before the job code runs (MSG-3). A server that is
	// never reached in the reconnect window means the job code never runs
	// (RECONNECT-6); one that goes away later does not stop it (RECONNECT-1).
	if ok, refused := job.s.awaitStarted(ctx); !ok {
		why := "cannot connect to " + p.SocketPath
		if refused {
			why = "the server refused this attempt's token (auth, AUTH-4) at " + p.SocketPath
		}
		fmt.Fprintf(stderr, "extjob: %s within reconnectWindowMs (%d ms); the job code did not run (RECONNECT-6)\n", why, p.ReconnectWindowMs)
		return 1
	}
	result, err, stack := call(handler, job)
	switch {
	case job.outcome() != "":
		// The handler sent the terminal message itself (LIFE-4: nothing more).
	case err != nil:
		var permanent permanentError
		job.fail(err.Error(), stack, !errors.As(err, &permanent))
	default:
		job.Complete(result) // an encoding or size problem fails the job instead
	}
	job.s.wait() // EXIT-2 depends only on what was sent, delivered or not
	if job.outcome() == kindCompleted {
		return 0
	}
	return 1
}

// call runs handler, turning a panic into an error with the panicking
// goroutine's stack (WRAP-2).
func call(handler Handler, job *Job) (result any, err error, stack string) {
	defer func() {
		if v := recover(); v != nil {
			if e, ok := v.(error); ok {
				err = e
			} else {
				err = fmt.Errorf("panic: %v", v)
			}
			result, stack = nil, string(debug.Stack())
		}
	}()
	result, err = handler(job.Context(), job)
	if err != nil {
		if err.Error() == "" {
			err = fmt.Errorf("%T with no text", err)
		}
		stack = errorStack(err)
	}
	return result, err, stack
}
