package lock

import (
	"sync"
	"time"
)

// lossLogWindow is how long losses of one server and cause are counted
// into one log line after the first is logged.
const lossLogWindow = time.Second

// lossLog logs losses at Error level without a line per lock: the first
// loss of a server and cause is logged at once, with its key; the next
// ones within lossLogWindow are counted and logged as one line ("1000
// locks lost on 10.0.0.3:6388: connection") when it ends. Each lock's
// own line stays available at Debug level.
type lossLog struct {
	c       *Client
	mu      sync.Mutex
	windows map[lossWindowKey]*lossWindow
	closed  bool
}

type lossWindowKey struct {
	server string
	cause  int
}

type lossWindow struct {
	n     int   // losses since the window opened, the first one aside
	first error // the first of them, as an example
	timer *time.Timer
}

func newLossLog(c *Client) *lossLog {
	return &lossLog{c: c, windows: map[lossWindowKey]*lossWindow{}}
}

// lost logs the loss of key on server (a list, for replicated locks).
func (ll *lossLog) lost(key, server string, err error) {
	ll.c.log.Debug("lock lost", "key", key, "server", server, "err", err)
	k := lossWindowKey{server, lossCause(err)}
	ll.mu.Lock()
	if w := ll.windows[k]; w != nil {
		if w.n == 0 {
			w.first = err
		}
		w.n++
		ll.mu.Unlock()
		return
	}
	if !ll.closed {
		w := &lossWindow{}
		w.timer = time.AfterFunc(lossLogWindow, func() { ll.flush(k, w) })
		ll.windows[k] = w
	}
	ll.mu.Unlock()
	ll.c.log.Error("lock lost", "key", key, "server", server, "cause", causes[k.cause], "err", err)
}

// flush ends w's window: the losses it counted are logged as one line,
// and if there were any, a new window counts the next ones.
func (ll *lossLog) flush(k lossWindowKey, w *lossWindow) {
	ll.mu.Lock()
	n, first := w.n, w.first
	if n == 0 || ll.closed {
		delete(ll.windows, k)
	} else {
		w.n, w.first = 0, nil
		w.timer.Reset(lossLogWindow)
	}
	ll.mu.Unlock()
	if n > 0 {
		ll.c.log.Error("locks lost", "count", n, "server", k.server, "cause", causes[k.cause], "example", first)
	}
}

// close logs what the open windows counted and stops them.
func (ll *lossLog) close() {
	ll.mu.Lock()
	ll.closed = true
	windows := ll.windows
	ll.windows = map[lossWindowKey]*lossWindow{}
	ll.mu.Unlock()
	for k, w := range windows {
		if w.timer.Stop() {
			ll.mu.Lock()
			ll.windows[k] = w
			ll.mu.Unlock()
			ll.flush(k, w)
		}
	}
}
