package bus

import (
	"testing"

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
	v := schemas.MustValidator()
	b.Run("validate", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			v.Validate(schemas.TypeSysInfoRequest, d)
		}
	})
}
