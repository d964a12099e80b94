package extjob

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// features is what this worker uses with the server: what the payload offers
// and this package implements (NEG-2). The zero value is a v1 worker (NEG-3).
type features struct {
	auth, replay, control, spool, checkpoint bool
	names                                    []string // as named in hello
}

func negotiate(p *Payload) features {
	offered := func(name string) bool { return slices.Contains(p.Features, name) }
	// Every extension needs hello, and hello needs the token (NEG-2, AUTH-2).
	if !offered("auth") || p.Token == "" {
		return features{}
	}
	f := features{
		auth:       true,
		replay:     offered("replay"),
		control:    offered("control"),
		spool:      offered("spool") && p.SpoolPath != "",
		checkpoint: offered("checkpoint"),
	}
	for _, x := range []struct {
		name string
		on   bool
	}{{"auth", true}, {"replay", f.replay}, {"control", f.control}, {"spool", f.spool}, {"checkpoint", f.checkpoint}} {
		if x.on {
			f.names = append(f.names, x.name)
		}
	}
	return f
}

// limits bound the buffer of unacknowledged messages (REPLAY-6) and lines
// (LIMIT-1).
type limits struct {
	maxMessages int
	maxBytes    int
	maxLine     int
}

// session carries one attempt's messages to the server over as many
// connections as it takes. Job code queues messages with enqueue; one
// goroutine (run) owns the connection, writes the queue and the heartbeats,
// and reconnects; another per connection (read) takes in acks and cancels.
type session struct {
	p        *Payload
	use      features
	jobID    []byte // encoded once
	network  string
	address  string
	clock    *clock
	limits   limits
	window   time.Duration // RECONNECT-3
	ackWait  time.Duration // REPLAY-3; also bounds a dial and the wait for welcome
	ioWait   time.Duration // bounds a write to a server that stopped reading
	onCancel func(*CancelError)

	mu             sync.Mutex
	space          *sync.Cond // signalled when buf shrinks or the connection state changes
	buf            []*outMsg  // replay: every unacknowledged message; otherwise every unwritten one
	bufBytes       int
	sent           int // buf[:sent] is written on the current connection
	seq            int64
	down           bool // a connection failed and none is back yet (REPLAY-6)
	acks           bool // the current connection acknowledges (REPLAY-2)
	hbInterval     time.Duration
	startedWritten bool
	terminalSent   bool
	terminal       *outMsg // the queued terminal message
	settled        bool
	result         error // why the terminal message could not be delivered
	dropped        int   // logs dropped while disconnected (REPLAY-6)

	ready     chan struct{} // closed once started is written or the first try to connect failed
	readyOnce sync.Once
	wake      chan struct{} // something to write, an ack, or the job code ended
	ended     chan struct{} // closed when the terminal message is queued
	done      chan struct{} // closed when the terminal message is settled
}

func newSession(p *Payload, network, address string, onCancel func(*CancelError)) *session {
	jobID, _ := encodeValue(p.JobID)
	hb := time.Duration(max(p.HeartbeatIntervalMs, 10)) * time.Millisecond
	ackWait := max(2*time.Second, hb)
	s := &session{
		p:          p,
		use:        negotiate(p),
		jobID:      jobID,
		network:    network,
		address:    address,
		clock:      &clock{now: time.Now},
		limits:     limits{maxMessages: 10000, maxBytes: 64 << 20, maxLine: int(p.MaxLineBytes)},
		window:     time.Duration(p.ReconnectWindowMs) * time.Millisecond,
		ackWait:    ackWait,
		ioWait:     max(ackWait, time.Duration(p.HeartbeatTimeoutMs)*time.Millisecond, 30*time.Second),
		onCancel:   onCancel,
		hbInterval: hb,
		ready:      make(chan struct{}),
		wake:       make(chan struct{}, 1),
		ended:      make(chan struct{}),
		done:       make(chan struct{}),
	}
	if s.limits.maxLine <= 0 {
		s.limits.maxLine = DefaultMaxLineBytes
	}
	s.space = sync.NewCond(&s.mu)
	return s
}

// start queues started (LIFE-1) and starts talking to the server.
func (s *session) start() {
	s.enqueue(&outMsg{kind: kindStarted}) // the first message always fits
	go s.run()
}

// awaitStarted waits until started is written, but no longer than the first
// try to connect takes.
func (s *session) awaitStarted(ctx context.Context) {
	select {
	case <-s.ready:
	case <-ctx.Done():
	}
}

// enqueue queues m. While connected (or connecting for the first time), a
// full buffer blocks the caller (back-pressure); once a connection has
// failed, progress is coalesced and the oldest logs give way until one is
// back (REPLAY-6). Only a terminal message is always taken.
func (s *session) enqueue(m *outMsg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.terminal != nil {
			return ErrFinished
		}
		if m.terminal() || !s.fullLocked() {
			break
		}
		if s.down && s.dropOldestLogLocked() {
			continue
		}
		s.space.Wait()
	}
	if m.kind == kindProgress && s.down {
		s.coalesceLocked(m)
	}
	if err := s.sealLocked(m); err != nil {
		return err
	}
	s.appendLocked(m)
	if m.terminal() {
		s.terminal = m
		close(s.ended)
	}
	return nil
}

func (s *session) fullLocked() bool {
	return len(s.buf) > 0 && (len(s.buf) >= s.limits.maxMessages || s.bufBytes >= s.limits.maxBytes)
}

// sealLocked numbers, stamps and encodes a sequenced message, and checks that
// the line will fit (LIMIT-1).
func (s *session) sealLocked(m *outMsg) error {
	n := unstampedLen(m.kind, s.jobID, m.body)
	if s.use.replay {
		s.seq++
		m.seq = s.seq
		m.line = line(m.kind, s.jobID, s.clock.stamp(), m.seq, m.body)
		n = len(m.line) - 1
	}
	if n > s.limits.maxLine {
		return fmt.Errorf("%w: a %s line of %d bytes, the server accepts %d", ErrTooLarge, m.kind, n, s.limits.maxLine)
	}
	return nil
}

func (s *session) appendLocked(m *outMsg) {
	s.buf = append(s.buf, m)
	s.bufBytes += m.size()
	s.poke()
}

func (s *session) removeLocked(i int) {
	s.bufBytes -= s.buf[i].size()
	s.buf = slices.Delete(s.buf, i, i+1)
	if i < s.sent {
		s.sent--
	}
	s.space.Broadcast()
}

func (s *session) dropOldestLogLocked() bool {
	for i, m := range s.buf {
		if m.kind == kindLog {
			s.removeLocked(i)
			s.dropped++
			return true
		}
	}
	return false
}

// coalesceLocked removes the latest progress not yet written anywhere: m
// supersedes it (REPLAY-6).
func (s *session) coalesceLocked(m *outMsg) {
	for i := len(s.buf) - 1; i >= 0; i-- {
		if old := s.buf[i]; old.kind == kindProgress && !old.written {
			old.coalesceInto(m)
			s.removeLocked(i)
			return
		}
	}
}

func (s *session) markReady() { s.readyOnce.Do(func() { close(s.ready) }) }

func (s *session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// wait blocks until the terminal message is acknowledged, written (without
// replay), spooled or given up; it returns why it could not be delivered.
func (s *session) wait() error {
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

func (s *session) settleLocked(err error) {
	if !s.settled {
		s.settled, s.result = true, err
		s.space.Broadcast()
		s.poke()
	}
}

func (s *session) isSettled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.settled
}

func (s *session) hasEnded() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}

// run connects, serves the connection until it fails, and reconnects after
// 100 ms, 200 ms, ... up to 2 s between tries (RECONNECT-1), for as long as
// the job code runs; once it has ended, for reconnectWindowMs (RECONNECT-3).
func (s *session) run() {
	defer close(s.done)
	var b backoff
	down := time.Now()
	for {
		if c, r := s.connect(); c != nil {
			b.reset()
			s.serve(c, r)
			if s.isSettled() {
				return
			}
			down = time.Now()
		}
		s.markReady() // the job code runs on without the server (RECONNECT-1)
		s.mu.Lock()
		s.down = true
		s.space.Broadcast() // a blocked enqueue may now drop logs
		s.mu.Unlock()
		if !s.pause(b.next(), down) {
			s.giveUp()
			return
		}
	}
}

// pause waits d before the next try; it returns false instead when the job
// code has ended and the connection has been down since down for the whole
// reconnect window.
func (s *session) pause(d time.Duration, down time.Time) bool {
	wakeAt := time.Now().Add(d)
	ended := s.ended
	for {
		if s.hasEnded() {
			ended = nil
			giveUpAt := down.Add(s.window)
			if !time.Now().Before(giveUpAt) {
				return false
			}
			if giveUpAt.Before(wakeAt) {
				wakeAt = giveUpAt
			}
		}
		timer := time.NewTimer(time.Until(wakeAt))
		select {
		case <-timer.C:
			return !s.hasEnded() || time.Now().Before(down.Add(s.window))
		case <-ended:
			timer.Stop()
		}
	}
}

// connect dials the server and, for an extended worker, presents the token
// and waits for welcome (AUTH-2). It returns nil when any of it fails.
func (s *session) connect() (net.Conn, *lineReader) {
	d := net.Dialer{Timeout: s.ackWait}
	c, err := d.Dial(s.network, s.address)
	if err != nil {
		return nil, nil
	}
	r := newLineReader(bufio.NewReader(c), maxServerLine)
	if !s.use.auth {
		s.resume(nil)
		return c, r
	}
	if s.writeLine(c, s.hello()) != nil || c.SetReadDeadline(time.Now().Add(s.ackWait)) != nil {
		c.Close()
		return nil, nil
	}
	for {
		b, err := r.next()
		if err != nil {
			c.Close()
			return nil, nil
		}
		m, err := parseServerMessage(b)
		if err != nil || m.JobID != s.p.JobID {
			continue // CTRL-6
		}
		switch {
		case m.Type == "welcome":
			if c.SetReadDeadline(time.Time{}) != nil {
				c.Close()
				return nil, nil
			}
			s.resume(m)
			return c, r
		case m.Type == "error" && m.Code == "auth":
			c.Close() // AUTH-4: the server refused this attempt's token
			return nil, nil
		}
	}
}

func (s *session) hello() []byte {
	var f fields
	f.str("token", s.p.Token)
	f.raw("protocolVersion", []byte("1"))
	names, _ := encodeValue(s.use.names)
	f.raw("features", names)
	f.raw("pid", strconv.AppendInt(nil, int64(os.Getpid()), 10))
	return line(kindHello, s.jobID, s.clock.stamp(), 0, f.b)
}

// resume prepares the buffer for a new connection: it forgets what the
// welcome's lastSeq covers and rewinds to resend the rest (REPLAY-4), or, for
// a worker without replay, sends started again (LIFE-3, RECONNECT-4).
func (s *session) resume(w *serverMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down, s.sent = false, 0
	if w != nil {
		s.acks = s.use.replay && slices.Contains(w.Features, "replay")
		s.hbInterval = time.Duration(w.HeartbeatIntervalMs) * time.Millisecond
		for i := 0; i < len(s.buf); {
			if m := s.buf[i]; m.written && m.seq > 0 && m.seq <= w.LastSeq {
				s.removeLocked(i)
				if m == s.terminal {
					s.settleLocked(nil)
				}
				continue
			}
			i++
		}
	}
	if !s.use.replay && s.startedWritten {
		again := &outMsg{kind: kindStarted}
		s.buf = append([]*outMsg{again}, s.buf...)
	}
	if s.dropped > 0 {
		var f fields
		f.str("level", string(LevelWarn))
		f.str("message", fmt.Sprintf("dropped %d log messages while disconnected (REPLAY-6)", s.dropped))
		warn := &outMsg{kind: kindLog, body: f.b}
		if s.sealLocked(warn) == nil {
			s.appendLocked(warn)
		}
		s.dropped = 0
	}
	s.space.Broadcast()
}

// serve writes the queue and the heartbeats to c until the connection fails
// or the terminal message is settled.
func (s *session) serve(c net.Conn, r *lineReader) {
	lost := make(chan struct{})
	go s.read(r, lost)
	defer func() {
		c.Close()
		<-lost
		s.mu.Lock()
		s.acks = false
		s.mu.Unlock()
	}()
	s.mu.Lock()
	beat := time.NewTicker(s.hbInterval)
	s.mu.Unlock()
	defer beat.Stop()
	var ackTimeout <-chan time.Time
	for !s.isSettled() {
		select {
		case <-beat.C: // due even while the queue is long (HB-2)
			if s.heartbeat(c) != nil {
				return
			}
		default:
		}
		if m := s.nextUnsent(); m != nil {
			if s.write(c, m) != nil {
				return
			}
			if m.terminal() && ackTimeout == nil {
				ackTimeout = time.After(s.ackWait)
			}
			continue
		}
		select {
		case <-s.wake:
		case <-beat.C:
			if s.heartbeat(c) != nil {
				return
			}
		case <-lost:
			return
		case <-ackTimeout:
			return // REPLAY-3: the terminal message was not acknowledged in time
		}
	}
}

func (s *session) nextUnsent() *outMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sent < len(s.buf) {
		return s.buf[s.sent]
	}
	return nil
}

func (s *session) write(c net.Conn, m *outMsg) error {
	b := m.line
	if b == nil {
		b = line(m.kind, s.jobID, s.clock.stamp(), 0, m.body)
	}
	s.mu.Lock()
	acks := s.acks
	if acks {
		// Counted as written before it is: its ack may come back before
		// Write returns. Only this goroutine removes unacknowledged
		// messages while connected, so m is at buf[sent].
		s.markWrittenLocked(m)
		s.sent++
	}
	s.mu.Unlock()
	if err := s.writeLine(c, b); err != nil {
		return err
	}
	if m.kind == kindStarted {
		s.markReady()
	}
	if acks {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.markWrittenLocked(m)
	s.removeLocked(s.sent)
	if m.terminal() {
		s.settleLocked(nil) // nothing will acknowledge it (NEG-3, EXIT-3)
	}
	return nil
}

func (s *session) markWrittenLocked(m *outMsg) {
	m.written = true
	switch {
	case m.kind == kindStarted:
		s.startedWritten = true
	case m.terminal():
		s.terminalSent = true
	}
}

// heartbeat writes a heartbeat from started to the terminal message (HB-2).
func (s *session) heartbeat(c net.Conn) error {
	s.mu.Lock()
	due := s.startedWritten && !s.terminalSent
	s.mu.Unlock()
	if !due {
		return nil
	}
	return s.writeLine(c, line(kindHeartbeat, s.jobID, s.clock.stamp(), 0, nil))
}

func (s *session) writeLine(c net.Conn, b []byte) error {
	if err := c.SetWriteDeadline(time.Now().Add(s.ioWait)); err != nil {
		return err
	}
	_, err := c.Write(b)
	return err
}

// read takes in what the server writes, so that it never stalls on this
// worker (CTRL-6), until the connection fails.
func (s *session) read(r *lineReader, lost chan<- struct{}) {
	defer close(lost)
	for {
		b, err := r.next()
		if err != nil {
			return
		}
		m, err := parseServerMessage(b)
		if err != nil || m.JobID != s.p.JobID || !s.use.auth {
			continue // unknown, invalid or (to a v1 worker, NEG-3) unexpected: ignored
		}
		switch m.Type {
		case "ack":
			s.ack(m.Seq)
		case "cancel":
			if s.use.control {
				s.onCancel(&CancelError{Reason: m.Reason, Deadline: m.DeadlineMs})
			}
		case "error":
			if m.Code == "auth" {
				return // AUTH-4: the server closes the connection
			}
		}
	}
}

// ack forgets every written message up to seq (REPLAY-2: acks are
// cumulative).
func (s *session) ack(seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.acks {
		return
	}
	for s.sent > 0 && s.buf[0].seq <= seq {
		m := s.buf[0]
		s.removeLocked(0)
		if m == s.terminal {
			s.settleLocked(nil)
		}
	}
}

// giveUp ends the attempt when the server stayed away: with spool, the
// hello and every unacknowledged message go to the spool file (SPOOL-2).
func (s *session) giveUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.use.spool {
		s.settleLocked(ErrUndelivered)
		return
	}
	content := s.hello()
	for _, m := range s.buf {
		b := m.line
		if b == nil {
			b = line(m.kind, s.jobID, s.clock.stamp(), 0, m.body)
		}
		content = append(content, b...)
	}
	if err := writeFileAtomic(s.p.SpoolPath, content); err != nil {
		s.settleLocked(fmt.Errorf("%w: %w", ErrUndelivered, err))
		return
	}
	s.settleLocked(nil)
}
