package extjob

// The goroutines that own a session's connections: run, which dials,
// writes and reconnects, and read, which takes in what the server sends.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// drainWait bounds how long a failed connection is still read.
const drainWait = 200 * time.Millisecond

// run connects, serves the connection until it fails, and reconnects after
// 100 ms, 200 ms, ... up to 2 s between tries (RECONNECT-1), for as long as
// the job code runs; once it has ended, for reconnectWindowMs (RECONNECT-3).
func (s *session) run() {
	defer close(s.done)
	var b backoff
	down := time.Now()
	connected := false
	for {
		if c, r := s.connect(); c != nil {
			connected = true
			b.reset()
			s.serve(c, r)
			if s.isSettled() {
				return
			}
			down = time.Now()
		}
		wait := b.next()
		if !connected {
			// RECONNECT-6: the job code waits for the first connection, for
			// reconnectWindowMs at most; then the worker gives up unrun.
			left := time.Until(down.Add(s.window))
			if left <= 0 {
				s.markUnreachable()
				return
			}
			wait = min(wait, left)
		} else {
			s.markReady() // the job code runs on without the server (RECONNECT-1)
		}
		s.mu.Lock()
		s.down = true
		s.space.Broadcast() // a blocked enqueue may now drop logs
		s.mu.Unlock()
		if !s.pause(wait, down) {
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
			s.mu.Lock()
			s.refused = true
			s.mu.Unlock()
			return nil, nil
		}
	}
}

// hello is the first line of every connection of an extended worker, and of
// its spool file (AUTH-2, SPOOL-2).
func (s *session) hello() []byte {
	var f fields
	f.str("token", s.p.Token)
	f.raw("protocolVersion", []byte("1"))
	names, _ := encodeValue(s.use.names)
	f.raw("features", names)
	f.raw("pid", strconv.AppendInt(nil, int64(os.Getpid()), 10))
	return line(kindHello, s.jobID, s.clock.stamp(), 0, f.b)
}

// serve writes the queue and the heartbeats to c until the connection fails
// or the terminal message is settled.
func (s *session) serve(c net.Conn, r *lineReader) {
	lost := make(chan struct{})
	go s.read(r, lost)
	defer func() {
		if !s.isSettled() {
			// Take in what the server sent before the connection failed
			// (acks above all), so that it is not replayed or spooled.
			c.SetReadDeadline(time.Now().Add(drainWait))
			<-lost
		}
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
