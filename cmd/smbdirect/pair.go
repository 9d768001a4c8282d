package main

import (
	"context"
	"fmt"

	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/rdma"
)

// rdmaPair is two connected endpoints in this process.
type rdmaPair struct {
	pd       rdma.PD
	cli, srv rdma.Endpoint
}

// newRDMAPair connects two endpoints of the chosen provider (over
// 127.0.0.1 for iwarp, --local for verbs). prepost posts receives on each
// before the connection exists, as RDMA requires.
func newRDMAPair(ctx context.Context, pc *providerChoice, reqData, repData []byte, prepost func(ep rdma.Endpoint, server bool) error) (*rdmaPair, error) {
	return newRDMAPairTuned(ctx, pc, nil, reqData, repData, prepost)
}

// newRDMAPairTuned is newRDMAPair with tune applied to the iwarp
// configuration of both ends (not used by other providers).
func newRDMAPairTuned(ctx context.Context, pc *providerChoice, tune func(*iwarp.Config), reqData, repData []byte, prepost func(ep rdma.Endpoint, server bool) error) (*rdmaPair, error) {
	// FirstSendDelay only exists for Linux siw responders; not needed here.
	pd, err := pc.open(nil, func(c *iwarp.Config) {
		c.FirstSendDelay = -1
		if tune != nil {
			tune(c)
		}
	}).NewPD()
	if err != nil {
		return nil, err
	}
	ln, err := pd.Listen(ctx, pc.pairAddr(), rdma.ListenConfig{})
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	p := &rdmaPair{pd: pd}
	p.srv, _ = pd.NewEndpoint(rdma.EndpointConfig{})
	p.cli, _ = pd.NewEndpoint(rdma.EndpointConfig{})
	if prepost != nil {
		if err := prepost(p.srv, true); err != nil {
			return nil, err
		}
		if err := prepost(p.cli, false); err != nil {
			return nil, err
		}
	}
	errc := make(chan error, 1)
	go func() {
		req, err := ln.Accept(ctx)
		if err != nil {
			errc <- err
			return
		}
		errc <- req.Accept(ctx, p.srv, rdma.ConnParams{PrivateData: repData})
	}()
	if err := p.cli.Connect(ctx, ln.Addr().String(), rdma.ConnParams{PrivateData: reqData}); err != nil {
		p.close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := <-errc; err != nil {
		p.close()
		return nil, fmt.Errorf("accept: %w", err)
	}
	return p, nil
}

func (p *rdmaPair) close() {
	p.cli.Close()
	p.srv.Close()
}

// waitOp polls ep until a completion of op arrives; other successful
// completions are skipped, failed ones returned.
func waitOp(ctx context.Context, ep rdma.Endpoint, op rdma.Opcode) (rdma.Completion, error) {
	var wc [1]rdma.Completion
	for {
		if _, err := ep.Poll(ctx, wc[:]); err != nil {
			return rdma.Completion{}, err
		}
		if wc[0].Err != nil {
			return wc[0], wc[0].Err
		}
		if wc[0].Op == op {
			return wc[0], nil
		}
	}
}
