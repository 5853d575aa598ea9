package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentauth/agentauth/bus"
	"github.com/agentauth/agentauth/client"
	"github.com/agentauth/agentauth/schemas"
)

// benchApprovalAudience is what the bench agent asks approval for.
const benchApprovalAudience = "https://shop.bench.example"

// setupApprovalE2E: one approval end to end — the agent's request (stored
// in JetStream), the notification reaching an approval app that follows
// the person's notifications, the app's decision (compare-and-set, token
// minted and sealed), the decision on the agent's feed, opened by the
// agent — against one synchronous JetStream publish on the same server.
func setupApprovalE2E(ctx context.Context, env *benchEnv) (benchOp, benchOp, func(), error) {
	if env.m == nil || env.m.approval == nil || env.userToken == "" {
		return nil, nil, nil, errors.New("approval.e2e needs the built-in instance (run without --nats-url)")
	}
	m := env.m
	app, err := client.Connect(ctx, client.Options{CredsFile: keyPath(m.Config.DataDir, approvalsApp+".agent.json"), URL: env.natsURL})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("approval app: %w", err)
	}
	who, err := userOf(env.userToken)
	if err != nil {
		app.Close()
		return nil, nil, nil, err
	}
	js, err := bus.JetStream(app.Conn())
	if err != nil {
		app.Close()
		return nil, nil, nil, err
	}
	actx, stop := context.WithCancel(context.WithoutCancel(ctx))
	cons, err := js.OrderedConsumer(actx, schemas.StreamNotify, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schemas.NotifySubject(who.Key()) + ".approval.requested"}, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		stop()
		app.Close()
		return nil, nil, nil, err
	}
	// The app approves what it is notified of, concurrently.
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		e, err := bus.Decode(msg.Headers(), msg.Data())
		if err != nil {
			return
		}
		var n schemas.ApprovalNotification
		if bus.DecodeData(e, &n) != nil {
			return
		}
		go func() { _, _ = app.Decide(actx, env.userToken, n.AuthReqID, true, "") }()
	})
	if err != nil {
		stop()
		app.Close()
		return nil, nil, nil, err
	}
	op := func(ctx context.Context) error {
		a, err := env.agent.RequestApproval(ctx, client.ApprovalRequest{UserToken: env.userToken, BindingMessage: "Bench purchase", Audience: benchApprovalAudience,
			AuthorizationDetails: benchDetails})
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err = env.agent.WaitForApproval(wctx, a.AuthReqID)
		return err
	}
	// The limit: a synchronous JetStream publish on the same server, to a
	// file stream of its own, by the operator's connection.
	ops, err := env.dial("bench-raw-publisher")
	if err != nil {
		stop()
		cc.Stop()
		app.Close()
		return nil, nil, nil, err
	}
	rawJS, err := jetstream.New(ops)
	if err == nil {
		_, err = rawJS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BENCH_RAW", Subjects: []string{"bench.raw"}, Storage: jetstream.FileStorage, MaxMsgs: 100000})
	}
	if err != nil {
		stop()
		cc.Stop()
		app.Close()
		ops.Close()
		return nil, nil, nil, err
	}
	payload := make([]byte, 512)
	base := func(ctx context.Context) error {
		_, err := rawJS.Publish(ctx, "bench.raw", payload)
		return err
	}
	return op, base, func() { cc.Stop(); stop(); app.Close(); ops.Close() }, nil
}

var benchDetails = []json.RawMessage{json.RawMessage(`{"type":"purchase","item":"coffee","amount":7.5,"currency":"EUR"}`)}
