package bus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentauth/agentauth/schemas"
)

// publishNotification stores an approval notification for userKey.
func publishNotification(tb testing.TB, js jetstream.JetStream, userKey, typ, verb, id string) {
	tb.Helper()
	e, err := NewEvent(typ, schemas.ApprovalNotification{AuthReqID: id, Agent: "shop-bot", BindingMessage: "Buy " + id, Status: verb})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := NewPublisher(js, nil).Publish(tb.Context(), schemas.NotifySubject(userKey)+".approval."+verb, e); err != nil {
		tb.Fatal(err)
	}
}

func consumerCount(tb testing.TB, js jetstream.JetStream) int {
	tb.Helper()
	return streamInfo(tb, js, schemas.StreamNotify).State.Consumers
}

// TestSubscribeNotifications: only the person's notifications stored
// after the call, in order, the first one published right after it
// returns included; the consumer is gone once ctx ends.
func TestSubscribeNotifications(t *testing.T) {
	js := MustJetStream(t)
	publishNotification(t, js, "alice-key", schemas.TypeApprovalRequested, "requested", "before")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan *event.Event, 10)
	if err := SubscribeNotifications(ctx, js, "alice-key", func(e *event.Event) { got <- e }); err != nil {
		t.Fatal(err)
	}
	publishNotification(t, js, "alice-key", schemas.TypeApprovalRequested, "requested", "r1")
	publishNotification(t, js, "bob-key", schemas.TypeApprovalRequested, "requested", "bob")
	publishNotification(t, js, "alice-key", schemas.TypeApprovalResolved, "resolved", "r1")
	publishNotification(t, js, "alice-key-2", schemas.TypeApprovalRequested, "requested", "prefix")

	for _, want := range []string{schemas.TypeApprovalRequested, schemas.TypeApprovalResolved} {
		e := receive(t, got, want)
		var n schemas.ApprovalNotification
		if err := DecodeData(e, &n); err != nil {
			t.Fatal(err)
		}
		if e.Type() != want || n.AuthReqID != "r1" {
			t.Errorf("got %s for %s, want %s for r1", e.Type(), n.AuthReqID, want)
		}
	}
	select {
	case e := <-got:
		t.Errorf("another person's or an earlier notification delivered: %s %s", e.Type(), e.Data())
	case <-time.After(200 * time.Millisecond):
	}

	if n := consumerCount(t, js); n != 1 {
		t.Fatalf("consumers while subscribed: got %d, want 1", n)
	}
	cancel()
	waitUntil(t, "the consumer to be deleted", func() bool { return consumerCount(t, js) == 0 })
}

// TestSubscribeNotificationsResumes: when the server loses the consumer
// before a first message, the subscription resumes from where it was set
// up, not from the newest message at the time of the reset.
func TestSubscribeNotificationsResumes(t *testing.T) {
	js := MustJetStream(t)
	got := make(chan *event.Event, 10)
	if err := SubscribeNotifications(t.Context(), js, "alice-key", func(e *event.Event) { got <- e }); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(t.Context(), schemas.StreamNotify)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for ci := range stream.ListConsumers(t.Context()).Info() {
		names = append(names, ci.Name)
	}
	if len(names) != 1 {
		t.Fatalf("consumers: %v", names)
	}
	if err := js.DeleteConsumer(t.Context(), schemas.StreamNotify, names[0]); err != nil {
		t.Fatal(err)
	}
	publishNotification(t, js, "alice-key", schemas.TypeApprovalRequested, "requested", "during-reset")
	e := receive(t, got, "the notification stored while the consumer was being recreated")
	var n schemas.ApprovalNotification
	if err := DecodeData(e, &n); err != nil || n.AuthReqID != "during-reset" {
		t.Errorf("got %+v (%v)", n, err)
	}
}

func TestSubscribeNotificationsBadKey(t *testing.T) {
	js := MustJetStream(t)
	for _, key := range []string{"", "a.b", "*", ">", "a b"} {
		if err := SubscribeNotifications(t.Context(), js, key, func(*event.Event) {}); err == nil {
			t.Errorf("user key %q accepted", key)
		}
	}
	if n := consumerCount(t, js); n != 0 {
		t.Errorf("consumers after refused keys: %d", n)
	}
}

// TestNotificationsTyped: the typed adapter passes approval notifications
// with their type and skips other events and messages that are not
// CloudEvents.
func TestNotificationsTyped(t *testing.T) {
	js := MustJetStream(t)
	type note struct {
		typ string
		n   schemas.ApprovalNotification
	}
	got := make(chan note, 10)
	err := Notifications{JS: js, Log: discardLog()}.Subscribe(t.Context(), "alice-key", func(typ string, n schemas.ApprovalNotification) {
		got <- note{typ, n}
	})
	if err != nil {
		t.Fatal(err)
	}
	subject := schemas.NotifySubject("alice-key") + ".approval.requested"
	if _, err := js.Publish(t.Context(), subject, []byte("not a cloudevent")); err != nil {
		t.Fatal(err)
	}
	publishNotification(t, js, "alice-key", "dev.agentauth.something.else", "requested", "other")
	publishNotification(t, js, "alice-key", schemas.TypeApprovalRequested, "requested", "r1")
	g := receive(t, got, "the notification")
	if g.typ != schemas.TypeApprovalRequested || g.n.AuthReqID != "r1" || g.n.BindingMessage != "Buy r1" || g.n.Status != "requested" {
		t.Errorf("got %+v", g)
	}
	select {
	case g := <-got:
		t.Errorf("unexpected: %+v", g)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestSubscribeNotificationsNoStream(t *testing.T) {
	js, err := JetStream(MustConn(t, MustServer(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = SubscribeNotifications(t.Context(), js, "alice-key", func(*event.Event) {})
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("without the stream: got %v, want %v", err, jetstream.ErrStreamNotFound)
	}
}
