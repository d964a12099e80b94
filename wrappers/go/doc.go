// Package extjob is the worker side of the external job protocol, version 1,
// as specified in protocol/SPEC.md of the extjob repository (requirement ids
// such as HB-2 or REPLAY-4 in this package's comments and errors refer to it).
//
// A job server spawns the worker, writes a JSON payload to its standard
// input and expects the worker to report over a Unix socket or a
// tcp://HOST:PORT address with newline-delimited JSON messages. This package
// reads the payload (PAY, ENV), connects, sends started, heartbeats from a
// goroutine of its own (HB-2) whatever the job code is doing, and gives the job
// code progress, log, checkpoint, complete and fail calls (WRAP-1).
//
// When the payload offers extensions (NEG-2) the package also presents the
// attempt's token (AUTH-2), numbers and replays its messages until the server
// acknowledges them (REPLAY), surfaces a server's cancel request as the
// cancellation of the job's context (CANCEL-3), saves checkpoints (CKPT) and,
// when the server stays away after the job code has ended, writes the result
// to the spool file (SPOOL-2). With a payload that offers nothing it is a plain
// v1 worker that never waits for the server (NEG-3), so it works with the
// original server too.
//
// A lost connection never stops the job code: messages are buffered (bounded,
// progress coalesced to the latest), the connection is retried on the
// schedule of RECONNECT-1, and what the server did not acknowledge is sent
// again.
//
// Most workers need only [Run]:
//
//	func main() {
//		extjob.Run(func(ctx context.Context, job *extjob.Job) (any, error) {
//			var in struct{ N int }
//			if err := job.Decode(&in); err != nil {
//				return nil, err
//			}
//			job.Progress(50, "halfway", nil)
//			return map[string]int{"double": 2 * in.N}, nil
//		})
//	}
//
// The package never prints: errors are returned, and [Run] writes the only
// line it ever writes (a payload error) to standard error.
package extjob
