// Package schemas is the wire vocabulary of agentauth: CloudEvent type
// constants, one Go struct per event data payload, the JSON Schemas those
// payloads must satisfy (embedded) and the AsyncAPI document describing every
// channel. It performs no I/O.
package schemas

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// SubjectRoot is the first token of every agentauth subject.
const SubjectRoot = "agentauth"

// SpecVersion is the only CloudEvents spec version agentauth accepts.
const SpecVersion = "1.0"

// ServiceName is the NATS micro service name (`nats micro ls`).
const ServiceName = "agentauth"

// Reserved are the second subject tokens that are not agent ids: the
// agent registry refuses them as agent names ("web" is the web inbox's
// name as a decider of approvals). Append only.
var Reserved = []string{"events", "notify", "audit", "admin", "sys", "bench", "svc", "_INBOX", "$SRV", "internal", "web"}

var agentIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidAgentID reports whether id can stand as the agent token of a subject:
// lower-case letters, digits, '-' and '_', at most 63 characters, and not a
// reserved name.
func ValidAgentID(id string) error {
	if !agentIDPattern.MatchString(id) {
		return fmt.Errorf("agent id %q must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit", id)
	}
	for _, r := range Reserved {
		if strings.EqualFold(r, id) {
			return fmt.Errorf("agent id %q is reserved", id)
		}
	}
	return nil
}

// AgentSource is the CloudEvent source an agent must use: the handler
// rejects a request whose source differs from the agent in its subject.
func AgentSource(agent string) string { return "/agents/" + agent }

// ServiceSource is the CloudEvent source of events agentauth emits.
const ServiceSource = "/agentauth"

// Subject returns the request subject of op for agent.
func Subject(agent string, op Op) string {
	return SubjectRoot + "." + agent + "." + op.Area + "." + op.Name
}

// AuditSubject is the audit stream subject agentauth.audit.<area>.<object>.<verb>,
// e.g. agentauth.audit.sys.info.ok or agentauth.audit.vault.token.issued.
// Audit subjects have five tokens so that they can never match a request
// subject (agentauth.<agent>.<area>.<op>, four tokens): the service
// subscribes to agentauth.*.<area>.<op> and must not receive its own audit.
func AuditSubject(area, object, verb string) string {
	return SubjectRoot + ".audit." + area + "." + object + "." + verb
}

// EventsSubject is the prefix of an agent's durable event feed.
func EventsSubject(agent string) string { return SubjectRoot + ".events." + agent }

// Stream names. Append only.
const (
	StreamAudit  = "AGENTAUTH_AUDIT"
	StreamEvents = "AGENTAUTH_EVENTS"
)

// Op is one request/reply operation served on
// agentauth.<agent>.<Area>.<Name>.
type Op struct {
	Area        string
	Name        string
	RequestType string // CloudEvent type of the request
	ReplyType   string // CloudEvent type of a successful reply
	Summary     string
}

// Endpoint is the micro endpoint name of the op (letters, digits, '-').
func (o Op) Endpoint() string { return o.Area + "-" + o.Name }

// SubjectPattern is the wildcard subject the service subscribes to.
func (o Op) SubjectPattern() string { return SubjectRoot + ".*." + o.Area + "." + o.Name }

// Operations lists every request/reply operation in the API. The AsyncAPI
// document must describe each one (a test keeps them in sync). Append only.
var Operations = []Op{
	OpSysInfo,
	OpWhoAmI,
	OpExchange,
	OpVaultToken,
	OpVaultConnect,
	OpVaultConnections,
	OpVaultDisconnect,
	OpApprovalRequest,
	OpApprovalStatus,
	OpApprovalDecide,
	OpRetrievalQuery,
	OpRetrievalIngest,
	OpRetrievalDelete,
}

// SealAlg names the sealing of secrets to an agent: X25519 key agreement
// between agentauth's and the agent's curve keys, XSalsa20-Poly1305 (nkeys
// xkeys, "xkv1"). Append only.
const SealAlg = "x25519-xsalsa20poly1305"

// Sealed is a secret sealed to one agent's X25519 key. Only that agent's
// seed opens it; Sender is agentauth's public sealing key.
type Sealed struct {
	Alg        string `json:"alg"`
	Sender     string `json:"sender"`
	Recipient  string `json:"recipient"`
	Ciphertext []byte `json:"ciphertext"`
}

// Fingerprint identifies a secret in logs and audit events without
// revealing it: "sha256:" and the first 16 hex digits of its SHA-256.
func Fingerprint(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// UserRef names a person: a verified subject at an issuer (subjects are
// unique only per issuer).
type UserRef struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
}

// Key is the person's opaque, fixed-length key: SHA-256 of issuer, a zero
// byte and subject, base64url (43 characters). Vault records and
// notification subjects use it.
func (u UserRef) Key() string {
	h := sha256.New()
	h.Write([]byte(u.Issuer))
	h.Write([]byte{0})
	h.Write([]byte(u.Subject))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}
