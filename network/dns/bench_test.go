package dns

import (
	"net"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// BenchmarkQueryUDP measures queries per second for a known name through
// the real sockets, from parallel clients that each keep one UDP socket
// (as a busy container's resolver would), so that the number is the
// server's and not the cost of opening sockets.
func BenchmarkQueryUDP(b *testing.B) {
	for _, name := range []string{"web.", "tasks.web."} {
		b.Run(name, func(b *testing.B) {
			s := newServerConfig(b, Config{Logger: discardLogger()})
			addr := listen(b, s, "net1", net1IP)
			s.SetRecords("net1", []Record{webRecord(), dbRecord()})
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				c := &mdns.Client{Timeout: 5 * time.Second}
				conn, err := c.Dial(addr)
				if err != nil {
					b.Error(err)
					return
				}
				defer conn.Close()
				m := new(mdns.Msg).SetQuestion(name, mdns.TypeA)
				for pb.Next() {
					resp, _, err := c.ExchangeWithConn(m, conn)
					if err != nil || len(resp.Answer) == 0 {
						b.Errorf("answer %v, err %v", resp, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
		})
	}
}

// BenchmarkServeDNS measures the handler alone for a known name: lookup,
// answer, truncation check and packing, without sockets.
func BenchmarkServeDNS(b *testing.B) {
	s := newServerConfig(b, Config{Logger: discardLogger()})
	n := &netState{id: "net1"}
	tbl, _ := buildTable("net1", []Record{webRecord(), dbRecord()})
	n.records.Store(tbl)
	h := &handler{s: s, n: n, l: &listener{sem: make(chan struct{}, 1)}}
	req := new(mdns.Msg).SetQuestion("getstartedlab_web.", mdns.TypeA)
	w := &discardWriter{}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeDNS(w, req)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// discardWriter is a ResponseWriter for a UDP client that packs the answer,
// as the real one does, and drops it.
type discardWriter struct{ buf []byte }

func (w *discardWriter) LocalAddr() net.Addr  { return &net.UDPAddr{} }
func (w *discardWriter) RemoteAddr() net.Addr { return &net.UDPAddr{} }
func (w *discardWriter) WriteMsg(m *mdns.Msg) error {
	var err error
	w.buf, err = m.PackBuffer(w.buf)
	return err
}
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) Close() error                { return nil }
func (w *discardWriter) TsigStatus() error           { return nil }
func (w *discardWriter) TsigTimersOnly(bool)         {}
func (w *discardWriter) Hijack()                     {}
func (w *discardWriter) Network() string             { return "udp" }
