package extjob

import (
	"bufio"
	"encoding/json"
	"errors"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// waitLimit bounds every wait of these tests; they wait for conditions,
// never for fixed times, so it only matters when something is broken.
const waitLimit = 10 * time.Second

// peer plays the server on a real socket: a Unix socket in t.TempDir() or
// TCP on 127.0.0.1. It can go away and come back at the same address.
type peer struct {
	t          testing.TB
	network    string
	address    string
	socketPath string // as it goes in the payload (TRANS-1)
	ln         net.Listener
	conns      chan net.Conn
}

var transports = []string{"unix", "tcp"}

func newPeer(t testing.TB, network string) *peer {
	t.Helper()
	p := &peer{t: t, network: network}
	if network == "unix" {
		p.address = filepath.Join(t.TempDir(), "job.sock")
	} else {
		p.address = relistenablePort()
	}
	p.listen()
	if network == "unix" {
		p.socketPath = p.address
	} else {
		p.address = p.ln.Addr().String()
		p.socketPath = "tcp://" + p.address
	}
	t.Cleanup(p.goAway)
	return p
}

// relistenablePort is a free loopback address whose port lies below the
// ephemeral range. The peer listens on it again after goAway; a port from that
// range may meanwhile become the source port of a reconnecting worker (which
// Linux then connects to itself) or of any other connection, and listening
// again would fail for no fault of the worker.
func relistenablePort() string {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	for i := 0; i < 64 && low > 2048; i++ {
		address := net.JoinHostPort("127.0.0.1", strconv.Itoa(low/2+rand.Intn(low-low/2)))
		if ln, err := net.Listen("tcp", address); err == nil {
			ln.Close()
			return address
		}
	}
	return "127.0.0.1:0"
}

// listen (again) at the peer's address, as a restarted server does.
func (p *peer) listen() {
	p.t.Helper()
	ln, err := net.Listen(p.network, p.address)
	if err != nil {
		p.t.Fatalf("listen %s %s: %v", p.network, p.address, err)
	}
	p.ln, p.conns = ln, make(chan net.Conn, 16)
	go func(conns chan<- net.Conn) {
		defer close(conns)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}(p.conns)
}

// goAway closes the listener, as a server that died.
func (p *peer) goAway() {
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
}

func (p *peer) accept() *peerConn {
	p.t.Helper()
	select {
	case c, ok := <-p.conns:
		if !ok {
			p.t.Fatal("the peer is not listening")
		}
		pc := &peerConn{t: p.t, c: c, r: bufio.NewReaderSize(c, 1<<16)}
		p.t.Cleanup(func() { c.Close() })
		return pc
	case <-time.After(waitLimit):
		p.t.Fatal("no connection from the worker")
	}
	return nil
}

// peerConn is one accepted connection.
type peerConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

// wire is a decoded worker line plus its raw text.
type wire struct {
	m   map[string]any
	raw string
}

func (w wire) typ() string { s, _ := w.m["type"].(string); return s }
func (w wire) seq() int    { f, _ := w.m["seq"].(float64); return int(f) }
func (w wire) str(k string) string {
	s, _ := w.m[k].(string)
	return s
}

// lineErr reads one line; it returns an error at EOF or after waitLimit.
func (pc *peerConn) lineErr() (string, error) {
	pc.c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := pc.r.ReadBytes('\n')
	if err != nil {
		return string(b), err
	}
	return string(b[:len(b)-1]), nil
}

// next reads the next line and checks that it is a well-formed message
// (FRAME-1, FRAME-2, MSG-1).
func (pc *peerConn) next() wire {
	pc.t.Helper()
	raw, err := pc.lineErr()
	if err != nil {
		pc.t.Fatalf("reading a line: %v (partial %.80q)", err, raw)
	}
	return checkWire(pc.t, raw)
}

// nextMessage is next, skipping heartbeats.
func (pc *peerConn) nextMessage() wire {
	pc.t.Helper()
	for {
		if w := pc.next(); w.typ() != kindHeartbeat {
			return w
		}
	}
}

// expectEOF reads to the end of the connection; only heartbeats may come.
func (pc *peerConn) expectEOF() {
	pc.t.Helper()
	for {
		raw, err := pc.lineErr()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			pc.t.Fatal("the worker kept the connection open")
		}
		if err != nil {
			return
		}
		if w := checkWire(pc.t, raw); w.typ() != kindHeartbeat {
			pc.t.Fatalf("unexpected %s before the end", raw)
		}
	}
}

// silent checks that nothing but heartbeats arrives for d.
func (pc *peerConn) silent(d time.Duration) {
	pc.t.Helper()
	pc.c.SetReadDeadline(time.Now().Add(d))
	b, err := pc.r.ReadBytes('\n')
	if err == nil {
		pc.t.Fatalf("unexpected line %.200s", b)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		pc.t.Fatalf("connection ended: %v", err)
	}
}

func (pc *peerConn) send(m map[string]any) {
	pc.t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		pc.t.Fatal(err)
	}
	pc.sendRaw(string(b) + "\n")
}

// trySend is send to a worker that may have exited: the next read tells.
func (pc *peerConn) trySend(m map[string]any) {
	b, _ := json.Marshal(m)
	pc.c.SetWriteDeadline(time.Now().Add(waitLimit))
	pc.c.Write(append(b, '\n'))
}

func (pc *peerConn) sendRaw(s string) {
	pc.t.Helper()
	pc.c.SetWriteDeadline(time.Now().Add(waitLimit))
	if _, err := pc.c.Write([]byte(s)); err != nil {
		pc.t.Fatalf("writing to the worker: %v", err)
	}
}

func serverMsg(jobID, typ string, kv ...any) map[string]any {
	m := map[string]any{"type": typ, "jobId": jobID, "timestamp": time.Now().UnixMilli()}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// handshake reads hello, checks it (AUTH-2) and answers welcome (CTRL-2).
func (pc *peerConn) handshake(p *Payload, lastSeq int) wire {
	pc.t.Helper()
	hello := pc.next()
	if hello.typ() != kindHello || hello.str("token") != p.Token || hello.m["protocolVersion"] != 1.0 || hello.m["pid"] == nil {
		pc.t.Fatalf("want hello with the token, got %s", hello.raw)
	}
	pc.send(serverMsg(p.JobID, "welcome", "protocolVersion", 1, "features", hello.m["features"],
		"lastSeq", lastSeq, "heartbeatIntervalMs", p.HeartbeatIntervalMs))
	return hello
}

func (pc *peerConn) ack(jobID string, seq int) {
	pc.t.Helper()
	pc.send(serverMsg(jobID, "ack", "seq", seq))
}

// hasSurrogateEscape reports a \uD800-\uDFFF escape in a JSON text.
func hasSurrogateEscape(s string) bool {
	for i := 0; i+5 < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if s[i] == 'u' && (s[i+1] == 'd' || s[i+1] == 'D') && strings.ContainsRune("89abcdefABCDEF", rune(s[i+2])) {
			return true
		}
	}
	return false
}

// checkWire checks one worker line against FRAME-1, FRAME-2 and MSG-1 and
// decodes it.
func checkWire(t testing.TB, raw string) wire {
	t.Helper()
	if !utf8.ValidString(raw) {
		t.Fatalf("line is not valid UTF-8 (FRAME-2): %.200q", raw)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] < 0x20 {
			t.Fatalf("raw control character %#x in line (FRAME-2): %.200q", raw[i], raw)
		}
	}
	// encoding/json never escapes a surrogate: any such escape would be a
	// sanitising failure (lone) or needless (paired).
	if hasSurrogateEscape(raw) {
		t.Fatalf("surrogate escape in line (FRAME-2): %.200q", raw)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m == nil {
		t.Fatalf("line is not a JSON object (FRAME-1): %v: %.200q", err, raw)
	}
	w := wire{m: m, raw: raw}
	if w.typ() == "" || w.str("jobId") == "" {
		t.Fatalf("line lacks type or jobId (MSG-1): %.200s", raw)
	}
	if ts, ok := m["timestamp"].(float64); !ok || ts < 0 || ts != float64(int64(ts)) {
		t.Fatalf("bad timestamp (MSG-1): %.200s", raw)
	}
	return w
}

// payloadJSON builds a payload the way a server does and parses it the way
// the worker does.
func testPayload(t testing.TB, socketPath string, extra map[string]any) *Payload {
	t.Helper()
	m := map[string]any{"jobId": "j_test", "name": "test", "data": map[string]any{}, "socketPath": socketPath}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePayload(b, func(string) string { return "" })
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	return p
}

const testToken = "tttttttttttttttttttttt"

// extended is the PAY-3 part of an extjob server's payload.
func extended(kv ...any) map[string]any {
	m := map[string]any{
		"protocolVersion":     1,
		"features":            []string{"auth", "replay", "control", "spool", "checkpoint"},
		"token":               testToken,
		"heartbeatIntervalMs": 1000,
		"heartbeatTimeoutMs":  3000,
	}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// waitFor polls cond until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *session) isDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

// finish runs f (Complete or Fail) in the background, so the peer can answer
// it; the channel yields its error.
func finish(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func result(t testing.TB, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(waitLimit):
		t.Fatal("Complete or Fail did not return")
	}
	return nil
}
