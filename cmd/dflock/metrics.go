package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// metricsServer serves the client's metrics as Prometheus text on
// /metrics, for --metrics-addr.
type metricsServer struct {
	provider *sdkmetric.MeterProvider
	srv      *http.Server
	ln       net.Listener
	done     chan struct{}
}

// serveMetrics starts serving metrics on addr; its Provider goes to the
// clients. Stop it with close. It says on stderr, for command, the address
// it took (a port of 0 picks one), and warns when that is not loopback
// only: the metrics name the servers.
func serveMetrics(addr, command string, stderr io.Writer) (*metricsServer, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m := &metricsServer{
		provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)),
		srv:      &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		ln:       ln,
		done:     make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stderr, "%s: metrics server: %v\n", command, err)
		}
	}()
	fmt.Fprintf(stderr, "%s: metrics on http://%s/metrics\n", command, m.Addr())
	if openToOthers(ln.Addr()) {
		fmt.Fprintf(stderr, "%s: warning: the metrics are open to other hosts (%s); give 127.0.0.1:PORT to keep them on this one\n", command, m.Addr())
	}
	return m, nil
}

// Provider returns the meter provider whose metrics the server shows.
func (m *metricsServer) Provider() metric.MeterProvider { return m.provider }

// Addr returns the address the server listens on.
func (m *metricsServer) Addr() string { return m.ln.Addr().String() }

func (m *metricsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.srv.Shutdown(ctx)
	<-m.done
	m.provider.Shutdown(ctx)
}

// openToOthers reports whether other hosts can reach a listener on addr:
// anything but a loopback address.
func openToOthers(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && !tcp.IP.IsLoopback()
}
