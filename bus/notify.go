package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentauth/agentauth/schemas"
)

// notifyInactive is how long the server keeps a notification consumer
// whose subscriber vanished without stopping it.
const notifyInactive = 30 * time.Second

// SubscribeNotifications calls fn with each approval notification (the
// events on agentauth.notify.<userKey>.>, stream schemas.StreamNotify)
// stored from now on, in stream order, until ctx ends. It reads with an
// ephemeral ordered consumer that starts after the stream's last message
// when it is set up (deliver-new; the caller loads what is already
// pending from the approval service) and resumes where it was after a
// reconnect. It returns once the consumer exists on the server, so
// nothing stored after it returns is missed; it returns an error when
// userKey is not one subject token or the consumer cannot be created.
//
// fn is called from one goroutine; a slow fn holds back only this
// subscription. A message that is not a CloudEvent is skipped. When ctx
// ends the consumer is stopped and deleted from the server.
func SubscribeNotifications(ctx context.Context, js jetstream.JetStream, userKey string, fn func(e *event.Event)) error {
	if userKey == "" || strings.ContainsAny(userKey, ".*> \t\r\n") {
		return fmt.Errorf("bus: notifications: %q is not a user key", userKey)
	}
	// Deliver-new made explicit: a start sequence survives the ordered
	// consumer's resets (after a reconnect) even before a first message,
	// where the deliver-new policy would skip what was stored meanwhile.
	stream, err := js.Stream(ctx, schemas.StreamNotify)
	if err != nil {
		return fmt.Errorf("bus: notifications: stream %s: %w", schemas.StreamNotify, err)
	}
	cons, err := js.OrderedConsumer(ctx, schemas.StreamNotify, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{schemas.NotifySubject(userKey) + ".>"},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       stream.CachedInfo().State.LastSeq + 1,
		InactiveThreshold: notifyInactive,
	})
	if err != nil {
		return fmt.Errorf("bus: notifications for %s: %w", userKey, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		e, err := Decode(nats.Header(msg.Headers()), msg.Data())
		if err != nil {
			return
		}
		fn(e)
	})
	if err != nil {
		return fmt.Errorf("bus: notifications for %s: %w", userKey, err)
	}
	context.AfterFunc(ctx, func() {
		cc.Stop()
		info := cons.CachedInfo()
		if info == nil {
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(dctx, schemas.StreamNotify, info.Name)
	})
	return nil
}

// Notifications gives approval apps a person's approval notifications as
// schemas.ApprovalNotification values (handlers.Notifications).
type Notifications struct {
	JS  jetstream.JetStream
	Log *slog.Logger // for notifications that do not decode; default slog.Default()
}

// Subscribe calls fn with the CloudEvent type (schemas.TypeApprovalRequested
// or TypeApprovalResolved) and data of each notification stored for
// userKey from now on, until ctx ends; see SubscribeNotifications. Events
// of another type or whose data does not decode are logged and skipped.
func (n Notifications) Subscribe(ctx context.Context, userKey string, fn func(typ string, d schemas.ApprovalNotification)) error {
	log := n.Log
	if log == nil {
		log = slog.Default()
	}
	return SubscribeNotifications(ctx, n.JS, userKey, func(e *event.Event) {
		var d schemas.ApprovalNotification
		err := DecodeData(e, &d)
		if err == nil && e.Type() != schemas.TypeApprovalRequested && e.Type() != schemas.TypeApprovalResolved {
			err = errors.New("not an approval notification")
		}
		if err != nil {
			log.Warn("skipping a notification", "type", e.Type(), "id", e.ID(), "error", err)
			return
		}
		fn(e.Type(), d)
	})
}
