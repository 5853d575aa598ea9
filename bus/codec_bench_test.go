package bus

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agentauth/agentauth/schemas"
)

func BenchmarkCodec(b *testing.B) {
	e, _ := NewEvent(schemas.TypeSysInfoRequest, schemas.SysInfoRequest{})
	e.SetSource("/agents/a1")
	h, d, _ := Encode(e)
	b.Run("encode", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			Encode(e)
		}
	})
	b.Run("decode", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			Decode(h, d)
		}
	})
	b.Run("newevent", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			NewEvent(schemas.TypeSysInfoRequest, schemas.SysInfoRequest{})
		}
	})
	// The SDK's side: a request written directly, a reply read directly,
	// against the event path (ParseReply, DecodeData) they replace.
	enc := NewRequestEncoder(MustSource("/agents/a1"))
	b.Run("sdk-encode", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			enc.Encode(schemas.TypeSysInfoRequest, &schemas.SysInfoRequest{})
		}
	})
	re, _ := NewEvent(schemas.TypeSysInfoReply, &schemas.SysInfo{Service: "agentauth", Version: "1.0.0", Agent: "a1", ServerTime: time.Now()})
	setExtension(re, ExtTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	rh, rd, _ := Encode(re)
	reply := &nats.Msg{Header: rh, Data: rd}
	b.Run("sdk-decode-reply", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			var out schemas.SysInfo
			DecodeReply(reply, schemas.TypeSysInfoReply, &out)
		}
	})
	b.Run("sdk-decode-reply-event-path", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			var out schemas.SysInfo
			e, _ := ParseReply(reply)
			DecodeData(e, &out)
		}
	})
	v := schemas.MustValidator()
	b.Run("validate", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			v.Validate(schemas.TypeSysInfoRequest, d)
		}
	})
}
