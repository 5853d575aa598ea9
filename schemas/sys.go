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
	Capabilities map[string]bool `json:"capabilities"`
}

// Capability names reported by sys.info. Append only.
const (
	CapSys       = "sys"
	CapUser      = "user"
	CapVault     = "vault"
	CapApproval  = "approval"
	CapRetrieval = "retrieval"
)
