package extjob

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func start(t testing.TB, p *Payload) *Job {
	t.Helper()
	j, err := StartWith(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// A payload without features makes a v1 worker: no hello, no seq, and it
// never waits for the server (NEG-3), over both transports (TRANS-1).
func TestNeg3Trans1V1WorkerNeverWaitsForTheServer(t *testing.T) {
	for _, network := range transports {
		t.Run(network, func(t *testing.T) {
			peer := newPeer(t, network)
			p := testPayload(t, peer.socketPath, nil)
			j := start(t, p)
			c := peer.accept()
			if err := j.Progress(50, "half", map[string]string{"step": "resize"}); err != nil {
				t.Fatal(err)
			}
			if err := j.Info("hi", "ms", 812); err != nil {
				t.Fatal(err)
			}
			if err := j.Complete(map[string]int{"frames": 240}); err != nil {
				t.Fatalf("Complete: %v", err)
			}
			want := []string{
				`{"type":"started","jobId":"j_test"}`,
				`{"type":"progress","jobId":"j_test","percent":50,"message":"half","data":{"step":"resize"}}`,
				`{"type":"log","jobId":"j_test","level":"info","message":"hi","data":{"ms":812}}`,
				`{"type":"completed","jobId":"j_test","result":{"frames":240}}`,
			}
			var last float64
			for i, w := range want {
				got := c.nextMessage()
				if i == 0 && got.raw != c.t.Name() && got.typ() != kindStarted {
					t.Fatalf("first line %s, want started (LIFE-1)", got.raw)
				}
				ts := got.m["timestamp"].(float64)
				if ts < last {
					t.Errorf("timestamp went back (TIME-1): %s", got.raw)
				}
				last = ts
				delete(got.m, "timestamp")
				assertJSON(t, got.m, w)
			}
			c.expectEOF()
		})
	}
}

// HB-2: heartbeats from started to the terminal message while the job code
// is blocked, none before started and none after the terminal message.
func TestHb2HeartbeatsWhileJobCodeIsBlocked(t *testing.T) {
	peer := newPeer(t, "unix")
	j := start(t, testPayload(t, peer.socketPath, map[string]any{"heartbeatIntervalMs": 20}))
	c := peer.accept()
	if w := c.next(); w.typ() != kindStarted {
		t.Fatalf("first line %s, want started", w.raw)
	}
	beats := 0
	for beats < 5 {
		if w := c.next(); w.typ() != kindHeartbeat {
			t.Fatalf("want heartbeats while the job code is blocked, got %s", w.raw)
		}
		beats++
	}
	if err := j.Complete(nil); err != nil {
		t.Fatal(err)
	}
	if w := c.nextMessage(); w.typ() != kindCompleted {
		t.Fatalf("want completed, got %s", w.raw)
	}
	// expectEOF tolerates heartbeats; after completed there must be none.
	if raw, err := c.lineErr(); err == nil {
		t.Fatalf("line after the terminal message (LIFE-4): %s", raw)
	}
}

// AUTH-2, REPLAY-1..3: hello first, nothing before welcome, every message
// numbered, and Complete returns once the terminal message is acknowledged.
func TestAuth2Replay1Replay3HandshakeSequencesAndAcks(t *testing.T) {
	for _, network := range transports {
		t.Run(network, func(t *testing.T) {
			peer := newPeer(t, network)
			p := testPayload(t, peer.socketPath, extended("spoolPath", filepath.Join(t.TempDir(), "spool")))
			j := start(t, p)
			c := peer.accept()
			hello := c.next()
			assertJSON(t, map[string]any{"type": hello.typ(), "token": hello.m["token"], "features": hello.m["features"],
				"protocolVersion": hello.m["protocolVersion"], "pid": hello.m["pid"]},
				`{"type":"hello","token":"`+testToken+`","features":["auth","replay","control","spool","checkpoint"],"protocolVersion":1,"pid":`+itoa(os.Getpid())+`}`)
			c.silent(150 * time.Millisecond) // AUTH-2: nothing before welcome
			c.send(serverMsg(p.JobID, "welcome", "protocolVersion", 1, "features", hello.m["features"], "lastSeq", 0, "heartbeatIntervalMs", 1000))
			j.Progress(10, "", nil)
			j.Log(LevelWarn, "w", nil)
			if err := j.Checkpoint(map[string]int{"step": 3}); err != nil {
				t.Fatal(err)
			}
			for seq, typ := range []string{kindStarted, kindProgress, kindLog, kindCheckpoint} {
				if w := c.nextMessage(); w.typ() != typ || w.seq() != seq+1 {
					t.Fatalf("want %s seq %d, got %s", typ, seq+1, w.raw)
				}
			}
			c.ack(p.JobID, 4)
			done := finish(func() error { return j.Complete("ok") })
			if w := c.nextMessage(); w.typ() != kindCompleted || w.seq() != 5 {
				t.Fatalf("want completed seq 5, got %s", w.raw)
			}
			select {
			case err := <-done:
				t.Fatalf("Complete returned before the ack: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
			c.ack(p.JobID, 5)
			if err := result(t, done); err != nil {
				t.Fatal(err)
			}
			c.expectEOF()
		})
	}
}

// RECONNECT-1, REPLAY-4, REPLAY-6: the server goes away and comes back; the
// worker keeps the job running, coalesces progress, and replays exactly what
// was not acknowledged, unchanged, in seq order.
func TestReconnect1Replay4Replay6ReplaysWhatWasNotAcknowledged(t *testing.T) {
	for _, network := range transports {
		t.Run(network, func(t *testing.T) {
			peer := newPeer(t, network)
			p := testPayload(t, peer.socketPath, extended())
			j := start(t, p)
			c1 := peer.accept()
			c1.handshake(p, 0)
			c1.nextMessage() // started, seq 1
			j.Info("one")
			one := c1.nextMessage()
			c1.ack(p.JobID, 1)
			peer.goAway()
			c1.c.Close()
			waitFor(t, "the worker to notice", func() bool { return j.s.isDown() })

			j.Info("two")
			j.Progress(10, "ten", nil)
			j.Progress(20, "", nil) // supersedes 10 and keeps its message (MSG-4)
			j.Info("three")
			peer.listen()
			c2 := peer.accept()
			c2.handshake(p, 1)
			if w := c2.nextMessage(); w.raw != one.raw {
				t.Fatalf("replay differs (REPLAY-4):\n got %s\nwant %s", w.raw, one.raw)
			}
			want := []string{
				`{"type":"log","jobId":"j_test","seq":3,"level":"info","message":"two"}`,
				`{"type":"progress","jobId":"j_test","seq":5,"percent":20,"message":"ten"}`,
				`{"type":"log","jobId":"j_test","seq":6,"level":"info","message":"three"}`,
			}
			for _, w := range want {
				got := c2.nextMessage()
				delete(got.m, "timestamp")
				assertJSON(t, got.m, w)
			}
			done := finish(func() error { return j.Complete(nil) })
			if w := c2.nextMessage(); w.typ() != kindCompleted || w.seq() != 7 {
				t.Fatalf("want completed seq 7, got %s", w.raw)
			}
			c2.ack(p.JobID, 7)
			if err := result(t, done); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// LIFE-3, RECONNECT-4: a v1 worker sends started again after reconnecting,
// then what it buffered meanwhile.
func TestLife3Reconnect4V1ReconnectSendsStartedAgain(t *testing.T) {
	peer := newPeer(t, "unix")
	j := start(t, testPayload(t, peer.socketPath, nil))
	c1 := peer.accept()
	c1.nextMessage()
	c1.c.Close()
	waitFor(t, "the worker to notice", func() bool { return j.s.isDown() })
	j.Info("while away")
	c2 := peer.accept()
	for _, typ := range []string{kindStarted, kindLog} {
		if w := c2.nextMessage(); w.typ() != typ {
			t.Fatalf("want %s, got %s", typ, w.raw)
		}
	}
	if err := j.Complete(nil); err != nil {
		t.Fatal(err)
	}
}

// REPLAY-3: an unacknowledged terminal message fails the connection; the
// worker reconnects and replays it.
func TestReplay3TerminalMessageWithoutAckIsReplayed(t *testing.T) {
	peer := newPeer(t, "unix")
	p := testPayload(t, peer.socketPath, extended("heartbeatIntervalMs", 50))
	j := start(t, p)
	c1 := peer.accept()
	c1.handshake(p, 0)
	c1.nextMessage()
	c1.ack(p.JobID, 1)
	begun := time.Now()
	done := finish(func() error { return j.Complete(1) })
	completed := c1.nextMessage()
	c1.expectEOF()
	if waited := time.Since(begun); waited < 2*time.Second {
		t.Errorf("gave up on the ack after %v, want max(2000, heartbeatIntervalMs) ms", waited)
	}
	c2 := peer.accept()
	c2.handshake(p, 1)
	if w := c2.nextMessage(); w.raw != completed.raw {
		t.Fatalf("replay differs: %s vs %s", w.raw, completed.raw)
	}
	c2.ack(p.JobID, 2)
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
}

// RECONNECT-3, SPOOL-2: the server never comes back; once the job code has
// ended and the window has passed, the unacknowledged messages go to the
// spool file after a hello, atomically, mode 0600.
func TestReconnect3Spool2SpoolWhenTheServerNeverComesBack(t *testing.T) {
	peer := newPeer(t, "unix")
	spool := filepath.Join(t.TempDir(), "j_test.1.ndjson")
	p := testPayload(t, peer.socketPath, extended("reconnectWindowMs", 300, "spoolPath", spool))
	j := start(t, p)
	c := peer.accept()
	c.handshake(p, 0)
	c.nextMessage()
	c.ack(p.JobID, 1)
	j.Info("unacknowledged")
	kept := c.nextMessage()
	peer.goAway()
	c.c.Close()
	if err := j.Complete(map[string]bool{"ok": true}); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	info, err := os.Stat(spool)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("spool mode %v, want 0600", info.Mode().Perm())
	}
	if _, err := os.Stat(spool + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary spool file left behind: %v", err)
	}
	content, _ := os.ReadFile(spool)
	lines := strings.Split(strings.TrimSuffix(string(content), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want hello, log and completed, got %q", content)
	}
	if hello := checkWire(t, lines[0]); hello.typ() != kindHello || hello.str("token") != testToken {
		t.Errorf("first spool line %s, want hello with the token", lines[0])
	}
	if lines[1] != kept.raw {
		t.Errorf("spooled log %s, want it as sent %s", lines[1], kept.raw)
	}
	if w := checkWire(t, lines[2]); w.typ() != kindCompleted || w.seq() != 3 {
		t.Errorf("want completed seq 3, got %s", lines[2])
	}
}

// RECONNECT-3 without spool: the worker gives up and says so.
func TestReconnect3GiveUpWithoutSpool(t *testing.T) {
	p := testPayload(t, filepath.Join(t.TempDir(), "nobody.sock"), map[string]any{"reconnectWindowMs": 200})
	j := start(t, p)
	begun := time.Now()
	if err := j.Complete(nil); !errors.Is(err, ErrUndelivered) {
		t.Fatalf("Complete: %v, want ErrUndelivered", err)
	}
	if waited := time.Since(begun); waited > waitLimit/2 {
		t.Errorf("gave up after %v, want about the window", waited)
	}
}

// CTRL-4, CANCEL-3: a cancel cancels the job's context with the reason as
// cause; the job code still decides how to end.
func TestCtrl4Cancel3CancelCancelsTheContext(t *testing.T) {
	peer := newPeer(t, "tcp")
	p := testPayload(t, peer.socketPath, extended())
	j := start(t, p)
	c := peer.accept()
	c.handshake(p, 0)
	c.nextMessage()
	if j.CancelRequested() || j.CancelReason() != "" {
		t.Fatal("cancel requested before any cancel")
	}
	c.send(serverMsg(p.JobID, "cancel", "reason", "timeout", "deadlineMs", 5000))
	select {
	case <-j.Context().Done():
	case <-time.After(waitLimit):
		t.Fatal("the context was not cancelled")
	}
	<-j.Done()
	var cause *CancelError
	if !errors.As(context.Cause(j.Context()), &cause) || cause.Reason != "timeout" || cause.Deadline != 5000 {
		t.Fatalf("cause %v, want the cancel's reason and deadline", context.Cause(j.Context()))
	}
	if !j.CancelRequested() || j.CancelReason() != "timeout" {
		t.Fatal("CancelRequested or CancelReason does not show the cancel")
	}
	done := finish(func() error { return j.Fail(Permanent(errors.New("stopped"))) })
	w := c.nextMessage()
	if w.typ() != kindFailed || w.str("error") != "stopped" || w.m["retryable"] != false {
		t.Fatalf("want failed stopped, not retryable, got %s", w.raw)
	}
	c.ack(p.JobID, w.seq())
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
}

// CTRL-6, FRAME-3, LIMIT-3: the worker ignores what it does not understand
// and keeps reading, even a line longer than it keeps; a line of 1 MiB (the
// welcome that lets the job start) is read.
func TestCtrl6Frame3Limit3ServerNoiseIsIgnoredAnd1MiBLinesRead(t *testing.T) {
	peer := newPeer(t, "unix")
	p := testPayload(t, peer.socketPath, extended())
	j := start(t, p)
	c := peer.accept()
	c.next() // hello
	c.sendRaw("not json\n[1]\n\r\n   \n" + `{"type":"pause","jobId":"j_test","timestamp":1}` + "\n")
	c.sendRaw(`{"type":"x-debug","jobId":"j_test","timestamp":1,"anything":1}` + "\n")
	c.sendRaw(`{"type":"error","jobId":"j_test","timestamp":1,"code":"wrong_job","message":"m"}` + "\n")
	c.sendRaw(`{"type":"welcome","jobId":"j_test","timestamp":1,"note":"` + strings.Repeat("x", 3<<20) + `"}` + "\n")
	welcome := `{"type":"welcome","jobId":"j_test","timestamp":1,"protocolVersion":1,"features":["auth","replay"],"lastSeq":0,"heartbeatIntervalMs":1000,"note":"`
	c.sendRaw(welcome + strings.Repeat("x", 1<<20-len(welcome)-len(`"}`)) + `"}` + "\r\n")
	started := c.nextMessage()
	c.sendRaw("\xff\xfe garbage\n" + `{"type":"ack","jobId":"another","timestamp":1,"seq":1}` + "\n")
	c.ack(p.JobID, started.seq())
	done := finish(func() error { return j.Complete(nil) })
	w := c.nextMessage()
	c.ack(p.JobID, w.seq())
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
}

// AUTH-4: a refused hello closes the connection; the worker tries again.
func TestAuth4RefusedHelloIsRetried(t *testing.T) {
	peer := newPeer(t, "unix")
	p := testPayload(t, peer.socketPath, extended())
	j := start(t, p)
	c1 := peer.accept()
	c1.next()
	c1.send(serverMsg(p.JobID, "error", "code", "auth", "message", "bad token"))
	c1.expectEOF()
	c2 := peer.accept()
	c2.handshake(p, 0)
	c2.nextMessage()
	c2.ack(p.JobID, 1)
	done := finish(func() error { return j.Complete(nil) })
	c2.ack(p.JobID, c2.nextMessage().seq())
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
}

// REPLAY-6: a full buffer blocks the job code while connected and drops the
// oldest logs while disconnected, then says how many.
func TestReplay6FullBufferBlocksOrDropsLogs(t *testing.T) {
	peer := newPeer(t, "unix")
	p := testPayload(t, peer.socketPath, extended())
	j := start(t, p)
	j.s.mu.Lock()
	j.s.limits.maxMessages = 3
	j.s.mu.Unlock()
	c1 := peer.accept()
	c1.handshake(p, 0)
	c1.nextMessage()
	j.Info("l1")
	j.Info("l2")
	c1.nextMessage()
	c1.nextMessage()
	blocked := finish(func() error { return j.Info("l3") }) // started, l1, l2 unacknowledged: full
	select {
	case err := <-blocked:
		t.Fatalf("Info returned with a full buffer while connected: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	c1.ack(p.JobID, 2)
	if err := result(t, blocked); err != nil {
		t.Fatal(err)
	}
	c1.nextMessage() // l3
	c1.ack(p.JobID, 4)

	peer.goAway()
	c1.c.Close()
	waitFor(t, "the worker to notice", func() bool { return j.s.isDown() })
	for _, m := range []string{"l4", "l5", "l6", "l7"} {
		if err := j.Info(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Checkpoint("c"); err != nil { // never dropped
		t.Fatal(err)
	}
	peer.listen()
	c2 := peer.accept()
	c2.handshake(p, 4)
	// The warn log takes a place in the buffer too, and comes before what
	// made room for it: the checkpoint is never dropped.
	for _, want := range []string{"l7", "dropped 3 log messages while disconnected (REPLAY-6)", "checkpoint"} {
		w := c2.nextMessage()
		if got := w.str("message") + map[bool]string{true: "checkpoint"}[w.typ() == kindCheckpoint]; got != want {
			t.Fatalf("want %s, got %s", want, w.raw)
		}
	}
}

// LIMIT-1: a line longer than maxLineBytes is never sent; a result that does
// not fit fails the job instead.
func TestLimit1LinesLongerThanTheLimit(t *testing.T) {
	peer := newPeer(t, "unix")
	p := testPayload(t, peer.socketPath, map[string]any{"maxLineBytes": 65536})
	j := start(t, p)
	c := peer.accept()
	c.nextMessage()
	if err := j.Info(strings.Repeat("x", 70000)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Info: %v, want ErrTooLarge", err)
	}
	if err := j.Info(strings.Repeat("x", 60000)); err != nil {
		t.Fatalf("a line under the limit: %v", err)
	}
	if err := j.Complete(strings.Repeat("y", 70000)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Complete: %v, want ErrTooLarge", err)
	}
	if w := c.nextMessage(); w.typ() != kindLog || len(w.str("message")) != 60000 {
		t.Fatalf("want the log under the limit, got %.100s", w.raw)
	}
	if w := c.nextMessage(); w.typ() != kindFailed || w.str("error") != "result too large: 70002 bytes" {
		t.Fatalf("want failed: result too large, got %.200s", w.raw)
	}
}

// LIFE-4: nothing is sent after the terminal message.
func TestLife4NothingAfterTheTerminalMessage(t *testing.T) {
	peer := newPeer(t, "unix")
	j := start(t, testPayload(t, peer.socketPath, nil))
	peer.accept()
	if err := j.Fail(errors.New("boom")); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Progress": j.Progress(1, "", nil), "Log": j.Info("x"), "Complete": j.Complete(nil), "Fail": j.Fail(errors.New("again")),
	} {
		if !errors.Is(err, ErrFinished) {
			t.Errorf("%s after failed: %v, want ErrFinished", name, err)
		}
	}
}

// MSG-4, MSG-6, NEG-2: calls the spec does not allow fail locally.
func TestMsg4Msg6Neg2InvalidCallsFailLocally(t *testing.T) {
	j := start(t, testPayload(t, filepath.Join(t.TempDir(), "none.sock"), map[string]any{"reconnectWindowMs": 0}))
	for name, err := range map[string]error{
		"percent above 100":  j.Progress(101, "", nil),
		"percent NaN":        j.Progress(nan(), "", nil),
		"data not an object": j.Progress(1, "", []int{1}),
		"level warning":      j.Log("warning", "m", nil),
		"odd keyvals":        j.Info("m", "k"),
		"key not a string":   j.Info("m", 1, 2),
		"unencodable data":   j.Log(LevelInfo, "m", map[string]any{"f": func() {}}),
		"checkpoint to a v1": j.Checkpoint(1),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := j.Checkpoint(1); !errors.Is(err, ErrNotOffered) {
		t.Errorf("Checkpoint with a v1 server: %v, want ErrNotOffered", err)
	}
}

// TIME-1: timestamps never decrease, even when the clock steps back.
func TestTime1TimestampsNeverDecrease(t *testing.T) {
	now := time.UnixMilli(5000)
	c := &clock{now: func() time.Time { return now }}
	var got []int64
	for _, step := range []time.Duration{0, time.Second, -3 * time.Second, time.Second, 5 * time.Second} {
		now = now.Add(step)
		got = append(got, c.stamp())
	}
	if want := []int64{5000, 6000, 6000, 6000, 9000}; !reflect.DeepEqual(got, want) {
		t.Fatalf("stamps %v, want %v", got, want)
	}
}

// RECONNECT-1: 100 ms doubling to 2000 ms, each plus 0-20 % jitter.
func TestReconnect1WaitsDoubleFrom100To2000MsWithJitter(t *testing.T) {
	var b backoff
	for round := 0; round < 2; round++ {
		for _, base := range []time.Duration{100, 200, 400, 800, 1600, 2000, 2000} {
			base *= time.Millisecond
			if d := b.next(); d < base || d > base+base/5 {
				t.Fatalf("wait %v, want %v plus at most 20 %%", d, base)
			}
		}
		b.reset()
	}
}

// NEG-2: with auth alone, the worker says hello but numbers nothing and
// needs no acks.
func TestNeg2AuthWithoutReplay(t *testing.T) {
	peer := newPeer(t, "unix")
	p := testPayload(t, peer.socketPath, extended("features", []string{"auth"}))
	j := start(t, p)
	c := peer.accept()
	if hello := c.handshake(p, 0); !reflect.DeepEqual(hello.m["features"], []any{"auth"}) {
		t.Fatalf("hello names %v, want only auth", hello.m["features"])
	}
	if err := j.Complete(nil); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{kindStarted, kindCompleted} {
		if w := c.nextMessage(); w.typ() != typ || w.m["seq"] != nil {
			t.Fatalf("want %s without seq, got %s", typ, w.raw)
		}
	}
}

// WRAP-4: calls from many goroutines give whole lines, each message once, in
// strictly increasing seq.
func TestWrap4ConcurrentCallers(t *testing.T) {
	peer := newPeer(t, "unix")
	p := testPayload(t, peer.socketPath, extended())
	j := start(t, p)
	c := peer.accept()
	c.handshake(p, 0)
	const writers, each = 8, 200
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				if err := j.Info(itoa(w*each+i), "w", w); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	seen := map[string]bool{}
	last := 0
	for len(seen) < writers*each {
		w := c.nextMessage()
		if w.seq() <= last {
			t.Fatalf("seq %d after %d", w.seq(), last)
		}
		last = w.seq()
		c.ack(p.JobID, last)
		if w.typ() == kindLog {
			if seen[w.str("message")] {
				t.Fatalf("message %s twice", w.str("message"))
			}
			seen[w.str("message")] = true
		}
	}
	for w := 0; w < writers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkLog measures messages per second to a server that reads (v1) or
// also acknowledges every message (replay). On demand: go test -bench .
func BenchmarkLog(b *testing.B) {
	for _, mode := range []string{"v1", "replay"} {
		b.Run(mode, func(b *testing.B) {
			t := b
			peer := newPeer(t, "unix")
			ext := map[string]any(nil)
			if mode == "replay" {
				ext = extended()
			}
			p := testPayload(t, peer.socketPath, ext)
			j := start(t, p)
			c := peer.accept()
			if mode == "replay" {
				c.handshake(p, 0)
			}
			go func() {
				for {
					raw, err := c.lineErr()
					if err != nil {
						return
					}
					if mode == "replay" && strings.Contains(raw, `"seq":`) {
						c.ack(p.JobID, checkWire(t, raw).seq())
					}
				}
			}()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j.Info("benchmark line", "i", i)
			}
			j.Complete(nil)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
