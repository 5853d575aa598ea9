package schemas

import (
	"strconv"
	"time"
)

// sys.info: what the service is and what it can do.
const (
	TypeSysInfoRequest = "dev.agentauth.sys.info.request"
	TypeSysInfoReply   = "dev.agentauth.sys.info.reply"
)

// OpSysInfo is agentauth.<agent>.sys.info.
var OpSysInfo = Op{
	Area: "sys", Name: "info",
	RequestType: TypeSysInfoRequest, ReplyType: TypeSysInfoReply,
	Summary: "Service version, enabled capabilities and server time.",
}

// SysInfoRequest is the data of a sys.info request. It has no fields; an
// empty body is accepted as {}.
type SysInfoRequest struct{}

// AppendJSON appends {}, as json.Marshal writes it (the SDK sends one
// with every sys.info).
func (SysInfoRequest) AppendJSON(b []byte) []byte { return append(b, "{}"...) }

// SysInfo is the data of a sys.info reply.
type SysInfo struct {
	Service      string       `json:"service"`
	Version      string       `json:"version"`
	Instance     string       `json:"instance"`
	Agent        string       `json:"agent"`
	ServerTime   time.Time    `json:"server_time"`
	Capabilities Capabilities `json:"capabilities"`
}

// Capabilities says which capability areas an instance serves. Append
// only: a new capability is a new field.
type Capabilities struct {
	Sys       bool `json:"sys"`
	User      bool `json:"user"`
	Vault     bool `json:"vault"`
	Approval  bool `json:"approval"`
	Retrieval bool `json:"retrieval"`
}

// AppendJSON appends the JSON encoding of s, equal to json.Marshal's (a
// test holds it to that), without reflection: sys.info is the
// benchmark's measure of the pipeline itself.
func (s *SysInfo) AppendJSON(b []byte) []byte {
	b = append(b, `{"service":`...)
	b = appendString(b, s.Service)
	b = append(b, `,"version":`...)
	b = appendString(b, s.Version)
	b = append(b, `,"instance":`...)
	b = appendString(b, s.Instance)
	b = append(b, `,"agent":`...)
	b = appendString(b, s.Agent)
	b = append(b, `,"server_time":"`...)
	b = s.ServerTime.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","capabilities":{"sys":`...)
	b = strconv.AppendBool(b, s.Capabilities.Sys)
	b = append(b, `,"user":`...)
	b = strconv.AppendBool(b, s.Capabilities.User)
	b = append(b, `,"vault":`...)
	b = strconv.AppendBool(b, s.Capabilities.Vault)
	b = append(b, `,"approval":`...)
	b = strconv.AppendBool(b, s.Capabilities.Approval)
	b = append(b, `,"retrieval":`...)
	b = strconv.AppendBool(b, s.Capabilities.Retrieval)
	return append(b, `}}`...)
}
