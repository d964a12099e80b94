// Command extjob-fixture is the Go wrapper's fixture worker: it plays the
// scenarios of SPEC.md section 11 (FIX-2), chosen by the payload's
// data.scenario, using only the public API of package extjob. The conformance
// suite runs it: extjob conformance -- extjob-fixture
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	extjob "github.com/extjob/extjob/wrappers/go"
)

// params are the scenario and its parameters; absent ones take FIX-2's
// defaults.
type params struct {
	Scenario   string          `json:"scenario"`
	Text       string          `json:"text"`
	Value      json.RawMessage `json:"value"`
	Message    *string         `json:"message"`
	Code       *int            `json:"code"`
	Ms         *int64          `json:"ms"`
	Count      *int            `json:"count"`
	IntervalMs int64           `json:"intervalMs"`
	Bytes      *int            `json:"bytes"`
}

func or[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func main() {
	extjob.Run(func(_ context.Context, job *extjob.Job) (any, error) {
		var p params
		// data may be any JSON value (PAY-2); anything but an object with a
		// scenario is the complete scenario (FIX-1).
		_ = job.Decode(&p)
		return play(job, p)
	})
}

func play(job *extjob.Job, p params) (any, error) {
	switch p.Scenario {
	case "", "complete":
		if err := job.Progress(50, "halfway", nil); err != nil {
			return nil, err
		}
		return map[string]bool{"ok": true}, nil
	case "echo":
		if err := job.Log(extjob.LevelInfo, p.Text, nil); err != nil {
			return nil, err
		}
		if err := job.Progress(50, p.Text, nil); err != nil {
			return nil, err
		}
		return orNull(p.Value), nil
	case "fail":
		return nil, errors.New(or(p.Message, "fixture failure"))
	case "crash":
		os.Exit(or(p.Code, 3))
	case "sleep":
		ms := or(p.Ms, 1000)
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return map[string]int64{"slept": ms}, nil
	case "progress":
		count := or(p.Count, 100)
		for i := 1; i <= count; i++ {
			if err := job.Progress(float64(i)*100/float64(count), fmt.Sprintf("step %d", i), nil); err != nil {
				return nil, err
			}
		}
		return map[string]int{"count": count}, nil
	case "logs":
		count := or(p.Count, 10)
		for i := 1; i <= count; i++ {
			if i > 1 && p.IntervalMs > 0 {
				time.Sleep(time.Duration(p.IntervalMs) * time.Millisecond)
			}
			if err := job.Log(extjob.LevelInfo, fmt.Sprintf("line %d", i), map[string]int{"i": i}); err != nil {
				return nil, err
			}
		}
		return map[string]int{"count": count}, nil
	case "levels":
		for _, level := range []extjob.Level{extjob.LevelDebug, extjob.LevelInfo, extjob.LevelWarn, extjob.LevelError} {
			if err := job.Log(level, string(level), map[string]string{"level": string(level)}); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case "cancel":
		select {
		case <-job.Done():
			if err := job.Log(extjob.LevelInfo, "cancel requested", nil); err != nil {
				return nil, err
			}
			return nil, errors.New("cancelled")
		case <-time.After(time.Duration(or(p.Ms, 30000)) * time.Millisecond):
			return map[string]bool{"cancelled": false}, nil
		}
	case "checkpoint":
		if last, ok := job.LastCheckpoint(); ok {
			return map[string]json.RawMessage{"resumedFrom": last}, nil
		}
		value := p.Value
		if value == nil {
			value = json.RawMessage(`{"step":1}`)
		}
		if err := job.Checkpoint(value); err != nil {
			return nil, err
		}
		return nil, errors.New("checkpoint saved")
	case "large":
		return strings.Repeat("x", or(p.Bytes, 1<<20)), nil
	}
	return nil, extjob.Permanent(fmt.Errorf("unknown scenario %q", p.Scenario))
}

// orNull is value, or JSON null when the parameter was left out.
func orNull(value json.RawMessage) json.RawMessage {
	if value == nil {
		return json.RawMessage("null")
	}
	return value
}
