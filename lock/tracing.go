package lock

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of the spans.
const tracerName = "github.com/dflock-go/dflock/lock"

// span starts a span named name for the handle, when the client has a
// tracer (Config.TracerProvider); end finishes it with the call's
// outcome. Without one it costs nothing: ctx comes back as it was.
func (l *Lock) span(ctx context.Context, name string) (context.Context, func(outcome string, err error)) {
	if l.c.tracer == nil {
		return ctx, endNothing
	}
	server, _ := l.c.ServerFor(l.key)
	return l.c.span(ctx, name, l.kindIdx(), server, 0)
}

// endNothing ends the span that was not started.
func endNothing(string, error) {}

// span starts a span named name about locks of kind (an index of kinds)
// on server, or about keys of them (a call on many keys) when keys is
// positive; see Lock.span.
func (c *Client) span(ctx context.Context, name string, kind int, server string, keys int) (context.Context, func(outcome string, err error)) {
	t := c.tracer
	if t == nil {
		return ctx, endNothing
	}
	ctx, sp := t.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrKind.String(kinds[kind])))
	if server != "" {
		sp.SetAttributes(attrServer.String(server))
	}
	if keys > 0 {
		sp.SetAttributes(attribute.Int("dflock.keys", keys))
	}
	return ctx, func(outcome string, err error) {
		if outcome != "" {
			sp.SetAttributes(attribute.String(string(attrOutcome), outcome))
		}
		if err != nil {
			// The error's kind, not its text: the text names the key.
			sp.SetStatus(codes.Error, errorKind(err))
		}
		sp.End()
	}
}

// errorKind names the kind of err without saying which key it is about.
func errorKind(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{{ErrLockLost, "lock lost"}, {ErrTimeout, "timeout"}, {ErrClosed, "closed"}, {ErrNotHeld, "not held"}, {ErrInvalid, "invalid"},
		{ErrMaxWaiters, "max waiters"}, {ErrMaxLocks, "max locks"}, {ErrAuth, "auth"}, {context.Canceled, "cancelled"}, {context.DeadlineExceeded, "deadline exceeded"}} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "error"
}

// acquiredOutcome names an acquire's result for a span.
func acquiredOutcome(ctx context.Context, ok bool, err error) string {
	return outcomes[acquireOutcome(ctx, ok, err)]
}
