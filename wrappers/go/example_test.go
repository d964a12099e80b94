package extjob_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	extjob "github.com/extjob/extjob/wrappers/go"
)

// A complete worker: Run reads the payload, runs the handler and exits 0
// after completed, 1 after failed.
func ExampleRun() {
	extjob.Run(func(ctx context.Context, job *extjob.Job) (any, error) {
		var in struct{ Frames int }
		if err := job.Decode(&in); err != nil {
			return nil, extjob.Permanent(err) // bad input: do not retry
		}
		for i := 1; i <= in.Frames; i++ {
			if ctx.Err() != nil { // the server asked us to stop (CANCEL-3)
				return nil, context.Cause(ctx)
			}
			job.Progress(float64(i)*100/float64(in.Frames), fmt.Sprintf("frame %d", i), nil)
		}
		job.Info("done", "frames", in.Frames)
		return map[string]int{"frames": in.Frames}, nil
	})
}

func ExampleReadPayload() {
	stdin := strings.NewReader(`{"jobId":"j_1","name":"resize","data":{"image":"a.png"},"socketPath":"tcp://127.0.0.1:7000"}` + "\n")
	p, err := extjob.ReadPayload(stdin, os.Getenv)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.JobID, p.Name, string(p.Data), p.SocketPath, p.HeartbeatIntervalMs)

	_, err = extjob.ReadPayload(strings.NewReader(`{"jobId":"j_1","data":{}}`), func(string) string { return "" })
	var perr *extjob.ProtocolError
	fmt.Println(errors.As(err, &perr), err)
	// Output:
	// j_1 resize {"image":"a.png"} tcp://127.0.0.1:7000 5000
	// true payload: name: missing: not in the stdin payload, EXTJOB_JOB_NAME or DONKEYLABS_JOB_NAME (PAY-2)
}

// The lower-level API, against a stand-in for a v1 server that prints what
// it receives.
func ExampleStartWith() {
	dir, _ := os.MkdirTemp("", "extjob-example")
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "job.sock")
	ln, _ := net.Listen("unix", socket)
	defer ln.Close()
	received := make(chan string)
	go func() {
		c, _ := ln.Accept()
		defer c.Close()
		lines := bufio.NewScanner(c)
		for lines.Scan() {
			var m map[string]any
			json.Unmarshal(lines.Bytes(), &m)
			switch m["type"] {
			case "progress":
				received <- fmt.Sprint("progress ", m["percent"], " ", m["message"])
			case "completed":
				received <- fmt.Sprint("completed ", m["result"])
			default:
				received <- fmt.Sprint(m["type"])
			}
		}
		close(received)
	}()

	job, err := extjob.StartWith(context.Background(), &extjob.Payload{
		JobID: "j_1", Name: "resize", Data: json.RawMessage(`{}`), SocketPath: socket,
		HeartbeatIntervalMs: 5000, ReconnectWindowMs: 1000,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	job.Progress(50, "halfway", nil)
	job.Complete("resized")
	for line := range received {
		fmt.Println(line)
	}
	// Output:
	// started
	// progress 50 halfway
	// completed resized
}
