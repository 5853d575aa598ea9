package agents

import (
	"fmt"
	"sort"
	"strings"

	"github.com/agentauth/agentauth/schemas"
)

// InboxPrefix is where an agent receives replies; only it may subscribe
// there.
func InboxPrefix(id string) string { return inboxRoot + id }

const inboxRoot = "_INBOX_"

// InInbox reports whether subject is in agent id's inbox (InboxPrefix(id)
// followed by "." and more), without building the prefix: it runs for
// every request the service answers.
func InInbox(id, subject string) bool {
	rest, ok := strings.CutPrefix(subject, inboxRoot)
	if !ok || id == "" {
		return false
	}
	rest, ok = strings.CutPrefix(rest, id)
	return ok && len(rest) > 1 && rest[0] == '.'
}

// FeedConsumer is the durable consumer name of an agent's event feed.
func FeedConsumer(id string) string { return "agent-" + id }

// LinksConsumer is the durable consumer name of an agent's "connection
// linked" events, which the SDK waits on apart from the feed. Its prefix
// is not "agent-", so no agent id can name another agent's consumer.
func LinksConsumer(id string) string { return "links-" + id }

// LinksFilter is the subject of an agent's "connection linked" events.
func LinksFilter(id string) string { return schemas.EventsSubject(id) + ".vault.connection.linked" }

// ApprovalsConsumer is the durable consumer name of an agent's "approval
// decided" events (its own prefix, like LinksConsumer's).
func ApprovalsConsumer(id string) string { return "approvals-" + id }

// ApprovalsFilter is the subject of an agent's "approval decided" events.
func ApprovalsFilter(id string) string { return schemas.EventsSubject(id) + ".approval.decided" }

// Permissions are the NATS subjects an agent may publish to and subscribe
// to; everything else is denied.
type Permissions struct {
	Publish   []string
	Subscribe []string
}

// PermissionsFor isolates agent id on the bus: it publishes requests only
// under agentauth.<id>.>, receives replies only on its own inbox prefix,
// and reads only its own event feed through its own durable consumer.
func PermissionsFor(id string) Permissions {
	consumer, links, approvals := FeedConsumer(id), LinksConsumer(id), ApprovalsConsumer(id)
	stream := schemas.StreamEvents
	return Permissions{
		Publish: []string{
			schemas.SubjectRoot + "." + id + ".>",
			// Its feed consumer: create (filtered on its feed), info,
			// pull, and acknowledge.
			"$JS.API.CONSUMER.CREATE." + stream + "." + consumer + "." + schemas.EventsSubject(id) + ".>",
			"$JS.API.CONSUMER.INFO." + stream + "." + consumer,
			"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer,
			"$JS.ACK." + stream + "." + consumer + ".>",
			// Its links consumer (the SDK's wait for a connected account).
			"$JS.API.CONSUMER.CREATE." + stream + "." + links + "." + LinksFilter(id),
			"$JS.API.CONSUMER.INFO." + stream + "." + links,
			"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + links,
			"$JS.ACK." + stream + "." + links + ".>",
			// Its approvals consumer (the SDK's wait for a decision).
			"$JS.API.CONSUMER.CREATE." + stream + "." + approvals + "." + ApprovalsFilter(id),
			"$JS.API.CONSUMER.INFO." + stream + "." + approvals,
			"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + approvals,
			"$JS.ACK." + stream + "." + approvals + ".>",
		},
		Subscribe: []string{InboxPrefix(id) + ".>"},
	}
}

// PermissionsForAgent are PermissionsFor the agent plus, for an approval
// app (Policy.Approver), reading people's approval notifications through
// consumers of its own on the notifications stream.
func PermissionsForAgent(a Agent) Permissions {
	p := PermissionsFor(a.ID)
	if a.Policy.Approver {
		n := schemas.StreamNotify
		p.Publish = append(p.Publish,
			"$JS.API.CONSUMER.CREATE."+n+".>",
			"$JS.API.CONSUMER.INFO."+n+".>",
			"$JS.API.CONSUMER.DELETE."+n+".>",
			"$JS.API.CONSUMER.MSG.NEXT."+n+".>",
			"$JS.API.STREAM.INFO."+n,
			"$JS.ACK."+n+".>",
		)
	}
	return p
}

// NATSConfig renders, for an external NATS server, the authorization block
// that gives each agent the permissions of PermissionsFor, plus the
// service user that agentauth itself connects as.
func NATSConfig(serviceNKey string, agents []Agent) string {
	sort.Slice(agents, func(i, j int) bool { return agents[i].ID < agents[j].ID })
	var b strings.Builder
	b.WriteString("# agentauth: paste into the NATS server configuration (nkey users).\n")
	b.WriteString("authorization {\n  users = [\n")
	fmt.Fprintf(&b, "    # agentauth service\n    { nkey: %q }\n", serviceNKey)
	for _, a := range agents {
		p := PermissionsForAgent(a)
		fmt.Fprintf(&b, "    # agent %s\n    { nkey: %q, permissions: {\n", a.ID, a.NKey)
		fmt.Fprintf(&b, "        publish: { allow: %s }\n", quoteList(p.Publish))
		fmt.Fprintf(&b, "        subscribe: { allow: %s }\n    } }\n", quoteList(p.Subscribe))
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
