package extjob

// Message kinds a worker sends (MSG-3..MSG-9).
const (
	kindHello      = "hello"
	kindStarted    = "started"
	kindProgress   = "progress"
	kindHeartbeat  = "heartbeat"
	kindLog        = "log"
	kindCheckpoint = "checkpoint"
	kindCompleted  = "completed"
	kindFailed     = "failed"
)

// outMsg is a message on its way to the server. A sequenced message (with
// replay) is stamped and encoded once, when it is made, because a replay
// resends it unchanged (REPLAY-4); an unsequenced one is stamped when it is
// written, so that the timestamps of a stream never decrease (STREAM-5).
type outMsg struct {
	kind    string
	body    []byte // the fields after the envelope
	seq     int64  // 0 when not sequenced
	line    []byte // the whole line of a sequenced message
	written bool   // written on some connection at least once

	// progress only: kept apart so that coalescing can carry an earlier
	// message over (MSG-4: a missing message means the previous still stands)
	percent, message, data []byte
}

func (m *outMsg) terminal() bool { return m.kind == kindCompleted || m.kind == kindFailed }

// size is what the message costs in the buffer (REPLAY-6).
func (m *outMsg) size() int { return len(m.body) + len(m.line) }

func newProgress(percent, message, data []byte) *outMsg {
	m := &outMsg{kind: kindProgress, percent: percent, message: message, data: data}
	m.rebuild()
	return m
}

func (m *outMsg) rebuild() {
	var f fields
	f.raw("percent", m.percent)
	if m.message != nil {
		f.raw("message", m.message)
	}
	if m.data != nil {
		f.raw("data", m.data)
	}
	m.body = f.b
}

// coalesceInto lets later, a progress that replaces m, keep m's message when
// it has none of its own.
func (m *outMsg) coalesceInto(later *outMsg) {
	if later.message == nil && m.message != nil {
		later.message = m.message
		later.rebuild()
	}
}
