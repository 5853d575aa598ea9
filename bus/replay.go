package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ReplayOptions select what to read from a stream. Zero values mean
// "from the beginning", "to the end" and "every subject".
type ReplayOptions struct {
	Stream   string
	Subjects []string
	Since    time.Time
	Until    time.Time
	FromSeq  uint64
	ToSeq    uint64
	// Follow keeps waiting for new messages until ctx ends, or until
	// the upper bound: past ToSeq, or at the first message stored after
	// Until.
	Follow bool
}

// Replayed is one stored event. Event is nil (and DecodeErr set) when the
// stored message is not a CloudEvent. Events stored together as a batch
// share Sequence and are numbered by Index.
type Replayed struct {
	Event     *event.Event
	DecodeErr error
	Subject   string
	Sequence  uint64
	Index     int
	Stored    time.Time
}

func isBatch(h nats.Header) bool {
	ct := (&natsMessage{header: h}).get(HeaderContentType)
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), mediaBatch)
}

// Replay reads a stream with an ephemeral ordered consumer and calls fn for
// each selected message, in order. total is called once with the number of
// messages the selection holds when the replay starts (for progress). It
// returns when the selection is exhausted (with Follow: when ctx ends or
// the upper bound is passed), or when fn returns an error.
func Replay(ctx context.Context, js jetstream.JetStream, o ReplayOptions, total func(uint64), fn func(Replayed) error) error {
	if o.FromSeq > 0 && !o.Since.IsZero() {
		return errors.New("replay: give a start sequence or a start time, not both")
	}
	if o.ToSeq > 0 && o.FromSeq > o.ToSeq {
		return fmt.Errorf("replay: start sequence %d is after end sequence %d", o.FromSeq, o.ToSeq)
	}
	if !o.Until.IsZero() && !o.Since.IsZero() && o.Until.Before(o.Since) {
		return fmt.Errorf("replay: --until %s is before --since %s", o.Until.Format(time.RFC3339), o.Since.Format(time.RFC3339))
	}
	stream, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return fmt.Errorf("replay: stream %s: %w", o.Stream, err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: o.Subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case o.FromSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.FromSeq
	case !o.Since.IsZero():
		t := o.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("replay: consumer on %s: %w", o.Stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("replay: consumer info: %w", err)
	}
	pending := info.NumPending
	if total != nil {
		total(pending)
	}
	if pending == 0 && !o.Follow {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer it.Stop()
	defer context.AfterFunc(ctx, it.Stop)()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				if o.Follow {
					return nil
				}
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("replay: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("replay: message metadata: %w", err)
		}
		if o.ToSeq > 0 && meta.Sequence.Stream > o.ToSeq {
			return nil
		}
		if !o.Until.IsZero() && meta.Timestamp.After(o.Until) {
			return nil
		}
		r := Replayed{Subject: msg.Subject(), Sequence: meta.Sequence.Stream, Stored: meta.Timestamp}
		h := nats.Header(msg.Headers())
		if isBatch(h) {
			events, err := DecodeBatch(msg.Data())
			if err != nil {
				r.DecodeErr = err
				if err := fn(r); err != nil {
					return err
				}
			}
			for i, e := range events {
				r.Event, r.Index = e, i
				if err := fn(r); err != nil {
					return err
				}
			}
		} else {
			r.Event, r.DecodeErr = Decode(h, msg.Data())
			if err := fn(r); err != nil {
				return err
			}
		}
		if meta.NumPending == 0 && !o.Follow {
			return nil
		}
		if o.ToSeq > 0 && meta.Sequence.Stream >= o.ToSeq {
			return nil // the last one asked for: no need to wait for the next
		}
	}
}
