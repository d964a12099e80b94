package extjob

import (
	"math/rand/v2"
	"time"
)

// Reconnect waits (RECONNECT-1): 100 ms, doubling, capped at 2 s, each with
// 0-20 % jitter so that many workers do not storm a restarted server together.
const (
	firstRetryWait = 100 * time.Millisecond
	maxRetryWait   = 2 * time.Second
)

type backoff struct{ wait time.Duration }

func (b *backoff) next() time.Duration {
	if b.wait == 0 {
		b.wait = firstRetryWait
	}
	d := b.wait
	b.wait = min(2*b.wait, maxRetryWait)
	return d + time.Duration(rand.Float64()*0.2*float64(d))
}

func (b *backoff) reset() { b.wait = 0 }
