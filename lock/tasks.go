package lock

import (
	"context"
	"sync"
)

// tasks owns every goroutine a Client starts besides the renewer's:
// re-takes of missing replicas (retakeClock), the try-locks of a round, the releases
// of many grants, the watch of a wait's arbiter, the fleet file's
// watcher. Close cancels its context, refuses new goroutines and waits
// for the running ones, as a connection that owns its reader and writer
// waits for both before it is closed: nothing a Client started outlives
// its Close.
type tasks struct {
	ctx    context.Context // ends at close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func newTasks() *tasks {
	t := &tasks{}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// enter counts a goroutine of the group in; false once the group is
// closed. leave counts it out.
func (t *tasks) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tasks) leave() { t.wg.Done() }

// goFn runs f in a goroutine of the group; false, without running it,
// once the group is closed.
func (t *tasks) goFn(f func()) bool {
	if !t.enter() {
		return false
	}
	go func() {
		defer t.leave()
		f()
	}()
	return true
}

// close cancels the group's context, refuses new goroutines and waits
// for those running.
func (t *tasks) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}
