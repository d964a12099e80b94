package extjob

import (
	"context"
	"fmt"
	"slices"
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
		spool:      offered("spool") && offered("replay") && p.SpoolPath != "", // a spool file is applied by seq
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
	result         error   // why the terminal message could not be delivered
	dropped        int     // logs dropped while disconnected (REPLAY-6)
	notice         *outMsg // the unsent warn log that counts them

	ready chan struct{} // closed once started is written, or a connection failed, or none was ever made
	// unreachable: no first connection within the reconnect window (RECONNECT-6)
	unreachable bool
	refused     bool // a hello was answered with error auth (AUTH-4)
	readyOnce   sync.Once
	wake        chan struct{} // something to write, an ack, or the job code ended
	ended       chan struct{} // closed when the terminal message is queued
	done        chan struct{} // closed when the terminal message is settled
}

func newSession(p *Payload, network, address string, onCancel func(*CancelError)) *session {
	jobID, _ := encodeValue(p.JobID)
	hbMs := p.HeartbeatIntervalMs
	if hbMs <= 0 {
		hbMs = DefaultHeartbeatIntervalMs // a Payload built by hand (HB-2)
	}
	hb := time.Duration(max(hbMs, 10)) * time.Millisecond
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

// awaitStarted waits until started is written: on the first connection, or
// once a connection was made and failed. It reports false when the first
// connection could not be made within reconnectWindowMs (RECONNECT-6): the
// job code must not run.
func (s *session) awaitStarted(ctx context.Context) (ok, refused bool) {
	select {
	case <-s.ready:
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.unreachable, s.refused
}

// markUnreachable ends a session whose first connection was never made.
func (s *session) markUnreachable() {
	s.mu.Lock()
	s.unreachable = true
	s.settleLocked(ErrUndelivered)
	s.mu.Unlock()
	s.markReady()
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
		if m.kind == kindLog && m != s.notice {
			s.removeLocked(i)
			s.dropped++
			s.noteDroppedLocked()
			return true
		}
	}
	return false
}

// noteDroppedLocked keeps one warn log that says how many logs were dropped
// (REPLAY-6): made with the next seq when the first goes, so that it comes
// before whatever the job sends next (a terminal message included), and
// replaced by a newer count while it is unsent.
func (s *session) noteDroppedLocked() {
	if s.notice != nil && !s.notice.written {
		if i := slices.Index(s.buf, s.notice); i >= 0 {
			s.removeLocked(i)
		}
	}
	var f fields
	f.str("level", string(LevelWarn))
	f.str("message", fmt.Sprintf("dropped %d log messages while disconnected (REPLAY-6)", s.dropped))
	f.raw("data", []byte(fmt.Sprintf(`{"dropped":%d}`, s.dropped)))
	warn := &outMsg{kind: kindLog, body: f.b}
	if s.sealLocked(warn) == nil {
		s.appendLocked(warn)
		s.notice = warn
	}
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
	s.dropped, s.notice = 0, nil // a later outage counts anew
	s.space.Broadcast()
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
