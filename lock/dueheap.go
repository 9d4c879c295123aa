package lock

import "time"

// dueItem is an entry of a dueHeap: due at dueAt, and told its place in
// the heap (-1 once out of it), for heap.Fix and heap.Remove.
type dueItem interface {
	dueAt() time.Time
	setIdx(i int)
}

// dueHeap is a min-heap (container/heap) of entries by due time: the
// renewer's renewals, the retake clock's re-takes.
type dueHeap[T dueItem] []T

func (h dueHeap[T]) Len() int           { return len(h) }
func (h dueHeap[T]) Less(i, j int) bool { return h[i].dueAt().Before(h[j].dueAt()) }
func (h dueHeap[T]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].setIdx(i)
	h[j].setIdx(j)
}

func (h *dueHeap[T]) Push(x any) {
	e := x.(T)
	e.setIdx(len(*h))
	*h = append(*h, e)
}

func (h *dueHeap[T]) Pop() any {
	old := *h
	e := old[len(old)-1]
	var zero T
	old[len(old)-1] = zero
	e.setIdx(-1)
	*h = old[:len(old)-1]
	return e
}
