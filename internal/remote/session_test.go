package remote

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// fakeServer is an SSH server on loopback that lets any client in and hands
// each channel it is asked for to handle.
func fakeServer(t *testing.T, handle func(ssh.NewChannel)) (addr string) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for nc := range chans {
					handle(nc)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// limitedServer is an SSH server that allows limit sessions at once and
// refuses more as OpenSSH does ("open failed"); each session's command
// exits 0 after a moment. It reports the most sessions it saw at once.
func limitedServer(t *testing.T, limit int32) (addr string, peak *atomic.Int32) {
	t.Helper()
	peak = &atomic.Int32{}
	var open atomic.Int32
	addr = fakeServer(t, func(nc ssh.NewChannel) {
		if n := open.Add(1); n > limit {
			open.Add(-1)
			nc.Reject(ssh.ConnectionFailed, "open failed")
			return
		} else {
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			open.Add(-1)
			return
		}
		go func() {
			defer open.Add(-1)
			for r := range creqs {
				r.Reply(r.Type == "exec", nil)
				if r.Type == "exec" {
					time.Sleep(20 * time.Millisecond)
					ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
					ch.Close()
				}
			}
		}()
	})
	return addr, peak
}

// TestSessionsWithinServerLimit: many commands at once on one connection
// never exceed MaxSessions, and a server that allows even fewer (and says
// so as OpenSSH does) gets them all, one after another.
func TestSessionsWithinServerLimit(t *testing.T) {
	for _, limit := range []int32{MaxSessions, 3} {
		addr, peak := limitedServer(t, limit)
		client, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "root", HostKeyCallback: ssh.InsecureIgnoreHostKey()})
		if err != nil {
			t.Fatal(err)
		}
		host, _, _ := net.SplitHostPort(addr)
		c := &Conn{name: "fake", client: client, ep: &Endpoint{HostName: host, User: "root"}, log: slog.New(slog.DiscardHandler), sessions: make(chan struct{}, MaxSessions)}
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for range 20 {
			wg.Go(func() { errs <- c.Run(context.Background(), Cmd{Argv: []string{"true"}}) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("limit %d: %v", limit, err)
			}
		}
		if p := peak.Load(); p > limit || p > MaxSessions {
			t.Errorf("limit %d: %d sessions at once", limit, p)
		}
		client.Close()
	}
}
