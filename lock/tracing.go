package lock

import (
	"context"

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
	t := l.c.tracer
	if t == nil {
		return ctx, func(string, error) {}
	}
	ctx, sp := t.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrKind.String(kinds[l.kindIdx()])))
	if server, err := l.c.ServerFor(l.key); err == nil {
		sp.SetAttributes(attrServer.String(server))
	}
	return ctx, func(outcome string, err error) {
		if outcome != "" {
			sp.SetAttributes(attribute.String(string(attrOutcome), outcome))
		}
		if err != nil {
			sp.RecordError(err)
			sp.SetStatus(codes.Error, err.Error())
		}
		sp.End()
	}
}

// acquiredOutcome names an acquire's result for a span.
func acquiredOutcome(ctx context.Context, ok bool, err error) string {
	switch {
	case err != nil && ctx.Err() != nil:
		return outcomeCancelled
	case err != nil:
		return outcomeError
	case !ok:
		return outcomeTimeout
	}
	return outcomeAcquired
}
