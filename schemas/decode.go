package schemas

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"
)

// errNotSimple makes a fast decoder give up; the caller then decodes with
// encoding/json, which is always right and slower.
var errNotSimple = errors.New("not a simple object")

// scanner reads the flat JSON objects of the hot requests: members whose
// values are strings without escapes, arrays of such strings, or small
// integers. Anything else (escapes, nested objects, floats, null…) is
// errNotSimple. Requests reach it after schema validation.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) byte(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// raw reads a string without escapes or control characters, valid
// UTF-8, and returns its bytes in the input.
func (s *scanner) raw() ([]byte, error) {
	if !s.byte('"') {
		return nil, errNotSimple
	}
	n := bytes.IndexByte(s.b[s.i:], '"')
	if n < 0 {
		return nil, errNotSimple
	}
	v := s.b[s.i : s.i+n]
	if !plainString(v) || !utf8.Valid(v) {
		return nil, errNotSimple
	}
	s.i += n + 1
	return v, nil
}

// plainString reports whether v holds no '\\' and no control character,
// eight bytes at a time.
func plainString(v []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; len(v) >= 8; v = v[8:] {
		x := binary.LittleEndian.Uint64(v)
		y := x ^ ('\\' * ones) // a zero byte where x has a '\\'
		if (x-0x20*ones)&^x&highs != 0 || (y-ones)&^y&highs != 0 {
			return false
		}
	}
	for _, c := range v {
		if c < 0x20 || c == '\\' {
			return false
		}
	}
	return true
}

// str reads a string as raw does, as a string of its own.
func (s *scanner) str() (string, error) {
	v, err := s.raw()
	return string(v), err
}

func (s *scanner) strs() ([]string, error) {
	if !s.byte('[') {
		return nil, errNotSimple
	}
	out := []string{}
	if s.byte(']') {
		return out, nil
	}
	for {
		v, err := s.str()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		if s.byte(']') {
			return out, nil
		}
		if !s.byte(',') {
			return nil, errNotSimple
		}
	}
}

func (s *scanner) int() (int, error) {
	s.ws()
	start := s.i
	for s.i < len(s.b) && (s.b[s.i] >= '0' && s.b[s.i] <= '9' || s.i == start && s.b[s.i] == '-') {
		s.i++
	}
	digits := s.b[start:s.i]
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if s.i-start > 9 || len(digits) == 0 || len(digits) > 1 && digits[0] == '0' {
		return 0, errNotSimple // too long, empty, or a leading zero (not JSON)
	}
	n, err := strconv.Atoi(string(s.b[start:s.i]))
	if err != nil || (s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E')) {
		return 0, errNotSimple
	}
	return n, nil
}

// decodeInto decodes b, a simple JSON object, into *out: member reads
// the value of each key into v. *out is set only when all of b decoded.
func decodeInto[T any](b []byte, out *T, member func(s *scanner, v *T, key string) error) error {
	s := scanner{b: b}
	var v T
	err := s.object(func(k string) error { return member(&s, &v, k) })
	if err == nil {
		*out = v
	}
	return err
}

// object calls member for each key, which must consume the value; the
// object must be the whole input.
func (s *scanner) object(member func(key string) error) error {
	if err := s.members(member); err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return errNotSimple
	}
	return nil
}

// DecodeJSON decodes r from a simple JSON object, or returns an error
// for encoding/json to take over (bus.DecodeData does).
func (r *WhoAmIRequest) DecodeJSON(b []byte) error {
	return decodeInto(b, r, func(s *scanner, v *WhoAmIRequest, k string) (err error) {
		switch k {
		case "user_token":
			v.UserToken, err = s.str()
		default:
			err = errNotSimple
		}
		return err
	})
}

// DecodeJSON decodes r from a simple JSON object, or returns an error
// for encoding/json to take over.
func (r *ExchangeRequest) DecodeJSON(b []byte) error {
	return decodeInto(b, r, func(s *scanner, v *ExchangeRequest, k string) (err error) {
		switch k {
		case "user_token":
			v.UserToken, err = s.str()
		case "audience":
			v.Audience, err = s.str()
		case "scopes":
			v.Scopes, err = s.strs()
		case "ttl_seconds":
			v.TTLSeconds, err = s.int()
		default:
			err = errNotSimple
		}
		return err
	})
}

// DecodeJSON decodes r from a simple JSON object, or returns an error
// for encoding/json to take over.
func (r *VaultTokenRequest) DecodeJSON(b []byte) error {
	return decodeInto(b, r, func(s *scanner, v *VaultTokenRequest, k string) (err error) {
		switch k {
		case "user_token":
			v.UserToken, err = s.str()
		case "connection":
			v.Connection, err = s.str()
		case "scopes":
			v.Scopes, err = s.strs()
		default:
			err = errNotSimple
		}
		return err
	})
}

// time reads a timestamp string as time.Time's UnmarshalJSON does.
func (s *scanner) time() (time.Time, error) {
	v, err := s.raw()
	if err != nil {
		return time.Time{}, err
	}
	var t time.Time
	if t.UnmarshalText(v) != nil { // the strict RFC 3339 of UnmarshalJSON
		return time.Time{}, errNotSimple
	}
	return t, nil
}

// bytes reads a standard base64 string as encoding/json decodes []byte.
func (s *scanner) bytes() ([]byte, error) {
	v, err := s.raw()
	if err != nil {
		return nil, err
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(v))) // [] for "", as encoding/json
	n, err := base64.StdEncoding.Decode(b, v)
	if err != nil {
		return nil, errNotSimple
	}
	return b[:n], nil
}

// members reads an object's members without requiring the input to end
// after it (a nested object). The key passed to member shares the input's
// bytes: it is for comparing, valid only during the call.
func (s *scanner) members(member func(key string) error) error {
	if !s.byte('{') {
		return errNotSimple
	}
	if s.byte('}') {
		return nil
	}
	for {
		kb, err := s.raw()
		k := unsafe.String(unsafe.SliceData(kb), len(kb))
		if err != nil {
			return err
		}
		if !s.byte(':') {
			return errNotSimple
		}
		if err := member(k); err != nil {
			return err
		}
		if s.byte('}') {
			return nil
		}
		if !s.byte(',') {
			return errNotSimple
		}
	}
}

// DecodeJSON decodes t (a vault.token reply, in the SDK) from a simple
// JSON object, or returns an error for encoding/json to take over.
func (t *VaultToken) DecodeJSON(b []byte) error {
	return decodeInto(b, t, func(s *scanner, v *VaultToken, k string) (err error) {
		switch k {
		case "connection":
			v.Connection, err = s.str()
		case "token_type":
			v.TokenType, err = s.str()
		case "scopes":
			v.Scopes, err = s.strs()
		case "expires_at":
			v.ExpiresAt, err = s.time()
		case "fingerprint":
			v.Fingerprint, err = s.str()
		case "sealed_token":
			err = s.members(func(k string) (err error) {
				switch k {
				case "alg":
					v.SealedToken.Alg, err = s.str()
				case "sender":
					v.SealedToken.Sender, err = s.str()
				case "recipient":
					v.SealedToken.Recipient, err = s.str()
				case "ciphertext":
					v.SealedToken.Ciphertext, err = s.bytes()
				default:
					err = errNotSimple
				}
				return err
			})
		default:
			err = errNotSimple
		}
		return err
	})
}

// bool reads true or false.
func (s *scanner) bool() (bool, error) {
	s.ws()
	for _, lit := range [...]string{"true", "false"} {
		if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
			s.i += len(lit)
			return lit == "true", nil
		}
	}
	return false, errNotSimple
}

// DecodeJSON decodes i (a sys.info reply, in the SDK) from a simple JSON
// object, or returns an error for encoding/json to take over.
func (i *SysInfo) DecodeJSON(b []byte) error {
	return decodeInto(b, i, func(s *scanner, v *SysInfo, k string) (err error) {
		c := &v.Capabilities
		switch k {
		case "service":
			v.Service, err = s.str()
		case "version":
			v.Version, err = s.str()
		case "instance":
			v.Instance, err = s.str()
		case "agent":
			v.Agent, err = s.str()
		case "server_time":
			v.ServerTime, err = s.time()
		case "capabilities":
			// Into the same struct, as encoding/json does with a
			// repeated key.
			err = s.members(func(k string) (err error) {
				switch k {
				case "sys":
					c.Sys, err = s.bool()
				case "user":
					c.User, err = s.bool()
				case "vault":
					c.Vault, err = s.bool()
				case "approval":
					c.Approval, err = s.bool()
				case "retrieval":
					c.Retrieval, err = s.bool()
				default:
					err = errNotSimple
				}
				return err
			})
		default:
			err = errNotSimple
		}
		return err
	})
}
