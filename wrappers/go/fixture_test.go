package extjob

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fixtureBin is cmd/extjob-fixture, built once for the tests that run it as
// a real process.
var fixtureBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "extjob-go-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureBin = filepath.Join(dir, "extjob-fixture")
	if out, err := exec.Command("go", "build", "-o", fixtureBin, "./cmd/extjob-fixture").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the fixture: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running fixture worker.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	exited         chan struct{}
	exitedAt       time.Time
}

// spawn starts the fixture with stdin as its payload and only env (plus
// PATH) in its environment, as a server does (PAY-1, ENV-1).
func spawn(t *testing.T, stdin string, env ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(fixtureBin), exited: make(chan struct{})}
	p.cmd.Stdin = strings.NewReader(stdin)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.exitedAt = time.Now()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

func spawnPayload(t *testing.T, payload map[string]any) *proc {
	t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return spawn(t, string(b)+"\n")
}

// wait returns the exit status (-1 after a signal), and checks that the
// fixture printed nothing on standard output (FIX-3, WRAP-5).
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(waitLimit):
		t.Fatal("the fixture did not exit")
	}
	if p.stdout.Len() > 0 {
		t.Errorf("the fixture wrote to standard output (FIX-3): %.200q", p.stdout.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

func fixturePayload(socketPath string, data map[string]any, ext map[string]any) map[string]any {
	m := map[string]any{"jobId": "j_fix", "name": "fixture", "data": data, "socketPath": socketPath}
	for k, v := range ext {
		m[k] = v
	}
	return m
}

// serveAttempt plays an extjob server for one attempt: it answers hello,
// acknowledges every message, and returns the messages but heartbeats,
// stripped of what varies, once the terminal message is acknowledged or the
// connection ends; also when it acknowledged the terminal message.
func serveAttempt(t *testing.T, c *peerConn, onStarted func()) (msgs []map[string]any, beats int, ackedAt time.Time) {
	t.Helper()
	for {
		raw, err := c.lineErr()
		if err != nil {
			return msgs, beats, ackedAt
		}
		w := checkWire(t, raw)
		switch w.typ() {
		case kindHeartbeat:
			beats++
			continue
		case kindHello:
			c.trySend(serverMsg(w.str("jobId"), "welcome", "protocolVersion", 1, "features", w.m["features"], "lastSeq", 0, "heartbeatIntervalMs", 50))
			continue
		}
		if w.seq() > 0 {
			c.trySend(serverMsg(w.str("jobId"), "ack", "seq", w.seq()))
		}
		for _, k := range []string{"jobId", "timestamp", "seq", "stack"} {
			delete(w.m, k)
		}
		msgs = append(msgs, w.m)
		switch w.typ() {
		case kindStarted:
			if onStarted != nil {
				onStarted()
			}
		case kindCompleted, kindFailed:
			return msgs, beats, time.Now()
		}
	}
}

// FIX-2, FIX-4, EXIT-3: every scenario, as a real process against a real
// socket, exits with the right status (EXIT-2, crash its own) within 1000 ms
// of the terminal ack, and prints nothing on standard output (FIX-3, wait).
func TestFix2Fix3Fix4Exit3FixtureScenarios(t *testing.T) {
	large := strings.Repeat("x", 300000)
	tests := []struct {
		name       string
		data       map[string]any
		checkpoint any
		v1         bool
		want       string // the messages as a JSON array
		exit       int
	}{
		{name: "complete", data: map[string]any{"scenario": "complete"},
			want: `[{"type":"started"},{"type":"progress","percent":50,"message":"halfway"},{"type":"completed","result":{"ok":true}}]`},
		{name: "no scenario is complete, v1", data: map[string]any{}, v1: true,
			want: `[{"type":"started"},{"type":"progress","percent":50,"message":"halfway"},{"type":"completed","result":{"ok":true}}]`},
		{name: "echo", data: map[string]any{"scenario": "echo", "text": "a\tb\"🎉", "value": []any{1, "x"}},
			want: `[{"type":"started"},{"type":"log","level":"info","message":"a\tb\"🎉"},{"type":"progress","percent":50,"message":"a\tb\"🎉"},{"type":"completed","result":[1,"x"]}]`},
		{name: "fail", data: map[string]any{"scenario": "fail", "message": "nope"},
			want: `[{"type":"started"},{"type":"failed","error":"nope"}]`, exit: 1},
		{name: "fail, v1", data: map[string]any{"scenario": "fail"}, v1: true,
			want: `[{"type":"started"},{"type":"failed","error":"fixture failure"}]`, exit: 1},
		{name: "sleep", data: map[string]any{"scenario": "sleep", "ms": 200},
			want: `[{"type":"started"},{"type":"completed","result":{"slept":200}}]`},
		{name: "progress", data: map[string]any{"scenario": "progress", "count": 4},
			want: `[{"type":"started"},{"type":"progress","percent":25,"message":"step 1"},{"type":"progress","percent":50,"message":"step 2"},
				{"type":"progress","percent":75,"message":"step 3"},{"type":"progress","percent":100,"message":"step 4"},{"type":"completed","result":{"count":4}}]`},
		{name: "logs", data: map[string]any{"scenario": "logs", "count": 2, "intervalMs": 10},
			want: `[{"type":"started"},{"type":"log","level":"info","message":"line 1","data":{"i":1}},{"type":"log","level":"info","message":"line 2","data":{"i":2}},{"type":"completed","result":{"count":2}}]`},
		{name: "levels", data: map[string]any{"scenario": "levels"},
			want: `[{"type":"started"},{"type":"log","level":"debug","message":"debug","data":{"level":"debug"}},{"type":"log","level":"info","message":"info","data":{"level":"info"}},
				{"type":"log","level":"warn","message":"warn","data":{"level":"warn"}},{"type":"log","level":"error","message":"error","data":{"level":"error"}},{"type":"completed","result":null}]`},
		{name: "checkpoint, first attempt", data: map[string]any{"scenario": "checkpoint"},
			want: `[{"type":"started"},{"type":"checkpoint","data":{"step":1}},{"type":"failed","error":"checkpoint saved"}]`, exit: 1},
		{name: "checkpoint, resumed", data: map[string]any{"scenario": "checkpoint"}, checkpoint: map[string]int{"step": 3},
			want: `[{"type":"started"},{"type":"completed","result":{"resumedFrom":{"step":3}}}]`},
		{name: "large", data: map[string]any{"scenario": "large", "bytes": len(large)},
			want: `[{"type":"started"},{"type":"completed","result":"` + large + `"}]`},
		{name: "cancel", data: map[string]any{"scenario": "cancel"},
			want: `[{"type":"started"},{"type":"log","level":"info","message":"cancel requested"},{"type":"failed","error":"cancelled"}]`, exit: 1},
		{name: "crash", data: map[string]any{"scenario": "crash", "code": 7}, want: `[{"type":"started"}]`, exit: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peer := newPeer(t, "unix")
			ext := extended("heartbeatIntervalMs", 50)
			if tt.v1 {
				ext = nil
			}
			if tt.checkpoint != nil {
				ext["checkpoint"], ext["attempt"] = tt.checkpoint, 2
			}
			proc := spawnPayload(t, fixturePayload(peer.socketPath, tt.data, ext))
			c := peer.accept()
			msgs, beats, ackedAt := serveAttempt(t, c, func() {
				if tt.data["scenario"] == "cancel" {
					c.trySend(serverMsg("j_fix", "cancel", "reason", "requested", "deadlineMs", 10000))
				}
			})
			if code := proc.wait(t); code != tt.exit {
				t.Fatalf("exit status %d, want %d; stderr %q", code, tt.exit, proc.stderr.String())
			}
			if !ackedAt.IsZero() && proc.exitedAt.Sub(ackedAt) > time.Second {
				t.Errorf("exited %v after the terminal ack, want <= 1000 ms (EXIT-3)", proc.exitedAt.Sub(ackedAt))
			}
			assertJSON(t, msgs, tt.want)
			if tt.data["scenario"] == "sleep" && beats < 2 {
				t.Errorf("%d heartbeats while the job code slept 200 ms at a 50 ms interval (HB-2)", beats)
			}
		})
	}
}

// PAY-6: a missing or malformed payload ends the process with status 2 and
// one line on standard error naming the problem, without connecting.
func TestPay6FixturePayloadErrors(t *testing.T) {
	peer := newPeer(t, "unix")
	tests := []struct{ name, stdin, want string }{
		{"empty stdin, no environment", "", "jobId"},
		{"not JSON", "{\"jobId\":\n", "not valid JSON"},
		{"not an object", "[1]\n", "not a JSON object"},
		{"no name", `{"jobId":"a","data":{},"socketPath":"` + peer.socketPath + `"}`, "name"},
		{"no data", `{"jobId":"a","name":"n","socketPath":"` + peer.socketPath + `"}`, "data"},
		{"bad heartbeat interval", `{"jobId":"a","name":"n","data":{},"socketPath":"` + peer.socketPath + `","protocolVersion":1,"features":[],"heartbeatIntervalMs":0}`, "heartbeatIntervalMs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc := spawn(t, tt.stdin)
			if code := proc.wait(t); code != 2 {
				t.Fatalf("exit status %d, want 2", code)
			}
			stderr := proc.stderr.String()
			if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") || !strings.Contains(stderr, tt.want) {
				t.Fatalf("stderr %q, want one line naming %q", stderr, tt.want)
			}
			select {
			case <-peer.conns:
				t.Fatal("connected with a malformed payload (PAY-6)")
			case <-time.After(50 * time.Millisecond):
			}
		})
	}
}

// ENV-2: with an empty stdin the environment of the original names the job.
func TestEnv2FixtureRunsFromTheEnvironment(t *testing.T) {
	peer := newPeer(t, "tcp")
	port := peer.address[strings.LastIndex(peer.address, ":")+1:]
	proc := spawn(t, "", "DONKEYLABS_JOB_ID=j_env", "DONKEYLABS_JOB_NAME=n", "DONKEYLABS_SOCKET_PATH=", "DONKEYLABS_TCP_PORT="+port)
	msgs, _, _ := serveAttempt(t, peer.accept(), nil)
	if code := proc.wait(t); code != 0 {
		t.Fatalf("exit status %d; stderr %q", code, proc.stderr.String())
	}
	assertJSON(t, msgs, `[{"type":"started"},{"type":"progress","percent":50,"message":"halfway"},{"type":"completed","result":{"ok":true}}]`)
}

// CANCEL-3: SIGTERM is a cancel request, even from a v1 server.
func TestCancel3FixtureSigtermIsACancel(t *testing.T) {
	peer := newPeer(t, "unix")
	proc := spawnPayload(t, fixturePayload(peer.socketPath, map[string]any{"scenario": "cancel"}, nil))
	msgs, _, _ := serveAttempt(t, peer.accept(), func() { proc.cmd.Process.Signal(syscall.SIGTERM) })
	if code := proc.wait(t); code != 1 {
		t.Fatalf("exit status %d, want 1", code)
	}
	assertJSON(t, msgs, `[{"type":"started"},{"type":"log","level":"info","message":"cancel requested"},{"type":"failed","error":"cancelled"}]`)
}

// A worker killed in the middle of writing a line leaves the server a
// partial last line and nothing else broken.
func TestFixtureKilledMidSend(t *testing.T) {
	peer := newPeer(t, "unix")
	proc := spawnPayload(t, fixturePayload(peer.socketPath, map[string]any{"scenario": "large", "bytes": 8 << 20}, nil))
	c := peer.accept()
	if w := c.next(); w.typ() != kindStarted {
		t.Fatalf("want started, got %s", w.raw)
	}
	head := make([]byte, 64<<10)
	if _, err := io.ReadFull(c.r, head); err != nil {
		t.Fatal(err)
	}
	proc.cmd.Process.Signal(syscall.SIGKILL) // blocked in the write: the peer stopped reading
	if code := proc.wait(t); code != -1 {
		t.Fatalf("exit status %d, want killed", code)
	}
	c.c.SetReadDeadline(time.Now().Add(waitLimit))
	rest, err := io.ReadAll(c.r)
	if err != nil {
		t.Fatal(err)
	}
	partial := append(head, rest...)
	if !bytes.HasPrefix(partial, []byte(`{"type":"completed"`)) || bytes.Contains(partial, []byte("\n")) || len(partial) >= 8<<20 {
		t.Fatalf("want one partial completed line, got %d bytes", len(partial))
	}
}

// RECONNECT-1, REPLAY-4: the server dies while the worker writes a large
// result; the worker replays the whole line to the restarted server.
func TestReconnect1Replay4FixtureServerDiesMidSend(t *testing.T) {
	peer := newPeer(t, "unix")
	// A long ack wait (REPLAY-3): checking 8 MiB under the race detector is slow.
	ext := extended("heartbeatIntervalMs", 10000)
	proc := spawnPayload(t, fixturePayload(peer.socketPath, map[string]any{"scenario": "large", "bytes": 8 << 20}, ext))
	c1 := peer.accept()
	c1.handshake(&Payload{JobID: "j_fix", Token: testToken, HeartbeatIntervalMs: 1000}, 0)
	c1.ack("j_fix", c1.nextMessage().seq())
	if _, err := io.ReadFull(c1.r, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	peer.goAway()
	c1.c.Close()
	peer.listen()
	c2 := peer.accept()
	c2.handshake(&Payload{JobID: "j_fix", Token: testToken, HeartbeatIntervalMs: 1000}, 1)
	w := c2.nextMessage()
	if result, _ := w.m["result"].(string); w.typ() != kindCompleted || len(result) != 8<<20 || w.seq() != 2 {
		t.Fatalf("want the whole completed line replayed, got %.100s", w.raw)
	}
	c2.ack("j_fix", 2)
	if code := proc.wait(t); code != 0 {
		t.Fatalf("exit status %d; stderr %q", code, proc.stderr.String())
	}
}

// WRAP-5: a broken standard error does not kill the worker (no SIGPIPE
// death): the payload error still ends it with status 2.
func TestWrap5FixtureSurvivesABrokenStderr(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	cmd := exec.Command(fixtureBin)
	cmd.Stdin, cmd.Stderr, cmd.Env = strings.NewReader(""), w, []string{}
	err = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 {
		t.Fatalf("exit status %d (%v), want 2", code, err)
	}
}

// RECONNECT-6: a worker that cannot make its first connection within
// reconnectWindowMs exits 1 after one line on standard error, without
// running the job code (the "echo" scenario would log and complete).
func TestReconnect6FirstConnectionNeverMadeExitsWithoutRunningTheJob(t *testing.T) {
	for _, tt := range []struct{ name, socketPath string }{
		{"unix", filepath.Join(t.TempDir(), "nobody-listens.sock")},
		{"tcp", "tcp://127.0.0.1:1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := map[string]any{"scenario": "echo", "text": "ran"}
			ext := map[string]any{"reconnectWindowMs": 300}
			proc := spawnPayload(t, fixturePayload(tt.socketPath, data, ext))
			if code := proc.wait(t); code != 1 {
				t.Fatalf("exit status %d, want 1; stderr %q", code, proc.stderr.String())
			}
			if lines := strings.Count(proc.stderr.String(), "\n"); lines != 1 {
				t.Fatalf("stderr has %d lines, want 1: %q", lines, proc.stderr.String())
			}
			if !strings.Contains(proc.stderr.String(), "RECONNECT-6") {
				t.Fatalf("stderr does not name RECONNECT-6: %q", proc.stderr.String())
			}
		})
	}
}

// RECONNECT-6, with a server that appears within the window: the job runs.
func TestReconnect6AServerThatComesUpInTimeRunsTheJob(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "late.sock")
	data := map[string]any{"scenario": "complete"}
	proc := spawnPayload(t, fixturePayload(path, data, map[string]any{"reconnectWindowMs": 20000}))
	time.Sleep(300 * time.Millisecond) // the fault itself: nobody listens yet
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conn, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if code := proc.wait(t); code != 0 || !strings.Contains(string(got), `"completed"`) {
		t.Fatalf("exit %d, received %q", code, got)
	}
}
