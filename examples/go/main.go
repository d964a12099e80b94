// Command checksum is an example job in Go: it "checksums" files, one step at
// a time, with the Go wrapper. data: {"steps": 20, "delayMs": 500}.
package main

import (
	"context"
	"fmt"
	"time"

	extjob "github.com/extjob/extjob/wrappers/go"
)

func main() {
	extjob.Run(func(ctx context.Context, job *extjob.Job) (any, error) {
		in := struct {
			Steps   int `json:"steps"`
			DelayMs int `json:"delayMs"`
		}{Steps: 20, DelayMs: 500}
		if err := job.Decode(&in); err != nil {
			return nil, fmt.Errorf("reading data: %w", err)
		}
		for i := 1; i <= in.Steps; i++ {
			select {
			case <-ctx.Done(): // a cancel request (CANCEL-3)
				return nil, fmt.Errorf("cancelled after %d of %d files", i-1, in.Steps)
			case <-time.After(time.Duration(in.DelayMs) * time.Millisecond):
			}
			percent := float64(i*100) / float64(in.Steps)
			if err := job.Progress(percent, fmt.Sprintf("file %d of %d", i, in.Steps), nil); err != nil {
				return nil, err
			}
			if i%5 == 0 {
				if err := job.Info(fmt.Sprintf("%d files checked", i), "done", i); err != nil {
					return nil, err
				}
			}
		}
		return map[string]any{"files": in.Steps}, nil
	})
}
