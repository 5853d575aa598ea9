package schemas

import "time"

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

// SysInfo is the data of a sys.info reply.
type SysInfo struct {
	Service      string          `json:"service"`
	Version      string          `json:"version"`
	Instance     string          `json:"instance"`
	Agent        string          `json:"agent"`
	ServerTime   time.Time       `json:"server_time"`
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
