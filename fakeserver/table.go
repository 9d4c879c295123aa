package fakeserver

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"time"

	"github.com/dflock-go/dflock/wire"
)

// table is the server's memory: every key it tracks, with holders and a
// FIFO queue of waiters. All of it is guarded by Server.mu.
type table struct {
	keys    map[string]*entry
	randBuf [4096]byte
	randPos int
}

func newTable() *table {
	return &table{keys: make(map[string]*entry), randPos: 4096}
}

// entry is one key: a semaphore whose limit was fixed by its first
// acquirer (a lock is limit 1).
type entry struct {
	key        string
	limit      int
	holders    []*holder
	head, tail *waiter
	waiters    int
	lastActive time.Time
}

type holder struct {
	token   string
	e       *entry
	owner   *conn // nil once its connection closed without auto-release
	ownerID uint64
	lease   time.Duration
	expires time.Time
	// gone says why the holder left: 0 while held.
	gone goneReason
	// For TokenState: a stall or a refusal was in force at the grant, and
	// Server.epoch then. They fit in the padding after gone, so a holder
	// stays 80 bytes.
	disrupted bool
	epoch     uint32
}

type goneReason uint8

const (
	held goneReason = iota
	goneReleased
	goneExpired
	goneDisconnected
)

// waiter is a queued request: a blocking l/sl, or a two-phase registration
// made by e/se (which also stands for an enqueue granted at once).
type waiter struct {
	c          *conn
	e          *entry
	lease      time.Duration
	prev, next *waiter
	queued     bool
	granted    *holder
	atOnce     bool          // an e/se granted at once, never queued
	ready      chan struct{} // closed on grant (nil when atOnce)
}

func (t *table) newToken() string {
	if t.randPos+16 > len(t.randBuf) {
		// One read of the CSPRNG serves 256 tokens.
		if _, err := rand.Read(t.randBuf[:]); err != nil {
			panic("fakeserver: crypto/rand failed: " + err.Error())
		}
		t.randPos = 0
	}
	tok := hex.EncodeToString(t.randBuf[t.randPos : t.randPos+16])
	t.randPos += 16
	return tok
}

// lookup finds or creates the entry for an acquire or enqueue, enforcing
// limit agreement and max-locks.
func (s *Server) lookup(key string, limit int, now time.Time) (*entry, wire.Status) {
	e := s.tab.keys[key]
	if e == nil {
		if s.cfg.MaxLocks > 0 && len(s.tab.keys) >= s.cfg.MaxLocks {
			return nil, wire.StatusErrorMaxLocks
		}
		e = &entry{key: key, limit: limit, lastActive: now}
		s.tab.keys[key] = e
		return e, 0
	}
	if e.limit != limit {
		return nil, wire.StatusErrorLimitMismatch
	}
	return e, 0
}

func (e *entry) free() bool { return len(e.holders) < e.limit && e.head == nil }

func (s *Server) grant(e *entry, c *conn, lease time.Duration, now time.Time) *holder {
	h := &holder{token: s.tab.newToken(), e: e, owner: c, ownerID: c.id, lease: lease, expires: now.Add(lease),
		disrupted: s.refusing.Load() || now.Before(s.stallEnd) || s.dropping > 0, epoch: s.epoch}
	e.holders = append(e.holders, h)
	if c.dead {
		// A waiter left in line by a connection closed without
		// auto-release: the slot is held, by nobody, until its lease ends.
		h.owner = nil
	} else {
		c.held[h] = struct{}{}
	}
	e.lastActive = now
	return h
}

func (s *Server) removeHolder(h *holder, why goneReason, now time.Time) {
	e := h.e
	for i, x := range e.holders {
		if x == h {
			last := len(e.holders) - 1
			e.holders[i] = e.holders[last]
			e.holders[last] = nil
			e.holders = e.holders[:last]
			break
		}
	}
	if c := h.owner; c != nil {
		delete(c.held, h)
		// A grant made at enqueue takes its registration with it, as in
		// the real server: a later wait finds nothing (error_not_enqueued).
		if r := c.enq[e.key]; r != nil && r.atOnce && r.granted == h {
			delete(c.enq, e.key)
		}
	}
	if s.faultedLocked(h) {
		s.noteLostLocked(h)
	}
	h.gone = why
	e.lastActive = now
}

// promote grants free slots to the queue's head, in order.
func (s *Server) promote(e *entry, now time.Time) {
	for len(e.holders) < e.limit && e.head != nil {
		w := e.head
		e.unlink(w)
		w.granted = s.grant(e, w.c, w.lease, now)
		close(w.ready)
	}
}

// evict removes expired holders of e and hands their slots on.
func (s *Server) evict(e *entry, now time.Time) int {
	n := 0
	for i := 0; i < len(e.holders); {
		h := e.holders[i]
		if now.Before(h.expires) {
			i++
			continue
		}
		s.removeHolder(h, goneExpired, now)
		n++
	}
	if n > 0 {
		s.promote(e, now)
	}
	return n
}

func (e *entry) enqueue(w *waiter) {
	w.e = e
	w.queued = true
	w.prev = e.tail
	if e.tail != nil {
		e.tail.next = w
	} else {
		e.head = w
	}
	e.tail = w
	e.waiters++
}

func (e *entry) unlink(w *waiter) {
	if !w.queued {
		return
	}
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		e.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		e.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	e.waiters--
}

func (e *entry) find(token string) *holder {
	for _, h := range e.holders {
		if h.token == token {
			return h
		}
	}
	return nil
}

// sweep evicts expired holders of every key, as the real server's lease
// sweep does once a second.
func (s *Server) sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.tab.keys {
		if len(e.holders) > 0 {
			s.evict(e, now)
		}
	}
}

// collect forgets keys idle for longer than GCMaxIdle.
func (s *Server) collect(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.tab.keys {
		if len(e.holders) == 0 && e.head == nil && now.Sub(e.lastActive) > s.cfg.GCMaxIdle {
			delete(s.tab.keys, k)
		}
	}
}

// snapshot builds the stats document.
func (s *Server) snapshot(now time.Time) wire.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := wire.Stats{
		Connections:    len(s.conns),
		Locks:          []wire.LockInfo{},
		Semaphores:     []wire.SemaphoreInfo{},
		IdleLocks:      []wire.IdleInfo{},
		IdleSemaphores: []wire.IdleInfo{},
	}
	for _, e := range s.tab.keys {
		busy := len(e.holders) > 0 || e.head != nil
		switch {
		case busy && e.limit == 1:
			li := wire.LockInfo{Key: e.key, Waiters: e.waiters}
			if len(e.holders) > 0 {
				h := e.holders[0]
				li.OwnerConnID = h.ownerID
				// Expired but not swept yet shows 0, never less.
				li.LeaseExpiresInS = max(h.expires.Sub(now).Seconds(), 0)
			}
			st.Locks = append(st.Locks, li)
		case busy:
			st.Semaphores = append(st.Semaphores, wire.SemaphoreInfo{Key: e.key, Limit: e.limit, Holders: len(e.holders), Waiters: e.waiters})
		case e.limit == 1:
			st.IdleLocks = append(st.IdleLocks, wire.IdleInfo{Key: e.key, IdleS: now.Sub(e.lastActive).Seconds()})
		default:
			st.IdleSemaphores = append(st.IdleSemaphores, wire.IdleInfo{Key: e.key, IdleS: now.Sub(e.lastActive).Seconds()})
		}
	}
	sort.Slice(st.Locks, func(i, j int) bool { return st.Locks[i].Key < st.Locks[j].Key })
	sort.Slice(st.Semaphores, func(i, j int) bool { return st.Semaphores[i].Key < st.Semaphores[j].Key })
	sort.Slice(st.IdleLocks, func(i, j int) bool { return st.IdleLocks[i].Key < st.IdleLocks[j].Key })
	sort.Slice(st.IdleSemaphores, func(i, j int) bool { return st.IdleSemaphores[i].Key < st.IdleSemaphores[j].Key })
	return st
}
