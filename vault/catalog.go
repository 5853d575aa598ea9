package vault

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/endpoints"
)

// ErrInvalidConnection is wrapped by every error of Validate, Resolve and
// Build that a change of configuration fixes.
var ErrInvalidConnection = errors.New("invalid connection")

type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }
func (e *invalidError) Unwrap() error { return ErrInvalidConnection }

func invalidf(format string, a ...any) error { return &invalidError{fmt.Sprintf(format, a...)} }

// Authorize parameters shared by several entries.
var (
	googleOffline = map[string]string{"access_type": "offline", "prompt": "consent"}
	// googleScopes: Google reports the OpenID scopes it granted by their
	// API names.
	googleScopes    = map[string]string{"email": "https://www.googleapis.com/auth/userinfo.email", "profile": "https://www.googleapis.com/auth/userinfo.profile"}
	atlassianParams = map[string]string{"audience": "api.atlassian.com", "prompt": "consent"}
	microsoft       = endpoints.AzureAD("common")
)

// catalog is the built-in connections, sorted by name. Entries carry no
// client credentials. RevocationURL is set only where the provider has an
// RFC 7009-style endpoint (POST token=… with client authentication);
// providers whose revocation is a bespoke API (Slack auth.revoke, GitHub's
// DELETE /applications/{client_id}/token, Dropbox /2/auth/token/revoke,
// HubSpot, QuickBooks' JSON body, Strava/Stripe deauthorize…) have "".
// Refresh follows what each provider documents; where it is unclear the
// stricter behaviour is chosen (rotating over non-rotating), since
// treating a non-rotating token as rotating costs nothing.
var catalog = []Connection{
	{
		Name: "airtable", Title: "Airtable",
		AuthURL: "https://airtable.com/oauth2/v1/authorize", TokenURL: "https://airtable.com/oauth2/v1/token",
		DefaultScopes: []string{"data.records:read", "schema.bases:read"},
		PKCE:          true, Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://airtable.com/developers/web/api/oauth-reference",
	},
	{
		Name: "asana", Title: "Asana",
		AuthURL: endpoints.Asana.AuthURL, TokenURL: endpoints.Asana.TokenURL,
		RevocationURL: "https://app.asana.com/-/oauth_revoke",
		DefaultScopes: []string{"default"},
		PKCE:          true, Refresh: RefreshNonRotating,
		Docs: "https://developers.asana.com/docs/oauth",
	},
	{
		// Atlassian 3LO has no PKCE and no RFC 7009 endpoint; refresh
		// tokens rotate and die after 90 days idle.
		Name: "atlassian", Title: "Atlassian",
		AuthURL: "https://auth.atlassian.com/authorize", TokenURL: "https://auth.atlassian.com/oauth/token",
		DefaultScopes: []string{"offline_access", "read:me"},
		AuthParams:    atlassianParams, Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/",
	},
	{
		Name: "auth0", Title: "Auth0",
		AuthURL: "https://{domain}/authorize", TokenURL: "https://{domain}/oauth/token",
		RevocationURL: "https://{domain}/oauth/revoke",
		DefaultScopes: []string{"openid", "profile", "email", "offline_access"},
		PKCE:          true, Refresh: RefreshRotatingGrace,
		Docs: "https://auth0.com/docs/get-started/authentication-and-authorization-flow/authorization-code-flow-with-pkce",
	},
	{
		// Bitbucket scopes are fixed on the OAuth consumer.
		Name: "bitbucket", Title: "Bitbucket",
		AuthURL: endpoints.Bitbucket.AuthURL, TokenURL: endpoints.Bitbucket.TokenURL,
		Refresh: RefreshNonRotating,
		Docs:    "https://developer.atlassian.com/cloud/bitbucket/oauth-2/",
	},
	{
		// Box scopes are fixed on the app; refresh tokens are single use.
		Name: "box", Title: "Box",
		AuthURL: "https://account.box.com/api/oauth2/authorize", TokenURL: "https://api.box.com/oauth2/token",
		RevocationURL: "https://api.box.com/oauth2/revoke",
		Refresh:       RefreshRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developer.box.com/guides/authentication/oauth2/",
	},
	{
		Name: "calendly", Title: "Calendly",
		AuthURL: "https://auth.calendly.com/oauth/authorize", TokenURL: "https://auth.calendly.com/oauth/token",
		RevocationURL: "https://auth.calendly.com/oauth/revoke",
		PKCE:          true, Refresh: RefreshRotating,
		Docs: "https://developer.calendly.com/create-a-developer-account",
	},
	{
		// ClickUp access tokens do not expire; there are no scopes.
		Name: "clickup", Title: "ClickUp",
		AuthURL: "https://app.clickup.com/api", TokenURL: "https://api.clickup.com/api/v2/oauth/token",
		Refresh: RefreshNonExpiring, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developer.clickup.com/docs/authentication",
	},
	{
		Name: "cognito", Title: "Amazon Cognito",
		AuthURL: "https://{domain}/oauth2/authorize", TokenURL: "https://{domain}/oauth2/token",
		RevocationURL: "https://{domain}/oauth2/revoke",
		DefaultScopes: []string{"openid", "email"},
		PKCE:          true, Refresh: RefreshRotatingGrace,
		Docs: "https://docs.aws.amazon.com/cognito/latest/developerguide/authorization-endpoint.html",
	},
	{
		Name: "confluence", Title: "Confluence",
		AuthURL: "https://auth.atlassian.com/authorize", TokenURL: "https://auth.atlassian.com/oauth/token",
		DefaultScopes: []string{"offline_access", "read:confluence-content.all", "search:confluence"},
		AuthParams:    atlassianParams, Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developer.atlassian.com/cloud/confluence/oauth-2-3lo-apps/",
	},
	{
		Name: "discord", Title: "Discord",
		AuthURL: endpoints.Discord.AuthURL, TokenURL: endpoints.Discord.TokenURL,
		RevocationURL: "https://discord.com/api/oauth2/token/revoke",
		DefaultScopes: []string{"identify"},
		Refresh:       RefreshRotating,
		Docs:          "https://discord.com/developers/docs/topics/oauth2",
	},
	{
		// Production accounts; developer accounts use account-d.docusign.com.
		Name: "docusign", Title: "Docusign",
		AuthURL: "https://account.docusign.com/oauth/auth", TokenURL: "https://account.docusign.com/oauth/token",
		DefaultScopes: []string{"signature", "extended"},
		PKCE:          true, Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://developers.docusign.com/platform/auth/authcode/",
	},
	{
		Name: "dropbox", Title: "Dropbox",
		AuthURL: endpoints.Dropbox.AuthURL, TokenURL: endpoints.Dropbox.TokenURL,
		DefaultScopes: []string{"account_info.read"},
		PKCE:          true, AuthParams: map[string]string{"token_access_type": "offline"}, Refresh: RefreshNonRotating,
		Docs: "https://developers.dropbox.com/oauth-guide",
	},
	{
		// Figma refreshes at a separate endpoint
		// (https://api.figma.com/v1/oauth/refresh), which Connection cannot
		// express; refresh returns no new refresh token.
		Name: "figma", Title: "Figma",
		AuthURL: "https://www.figma.com/oauth", TokenURL: "https://api.figma.com/v1/oauth/token",
		DefaultScopes: []string{"current_user:read", "file_content:read"}, ScopeSeparator: ",",
		Refresh: RefreshNonRotating, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://developers.figma.com/docs/rest-api/authentication/",
	},
	{
		Name: "fitbit", Title: "Fitbit",
		AuthURL: endpoints.Fitbit.AuthURL, TokenURL: endpoints.Fitbit.TokenURL,
		RevocationURL: "https://api.fitbit.com/oauth2/revoke",
		DefaultScopes: []string{"profile"},
		PKCE:          true, Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://dev.fitbit.com/build/reference/web-api/developer-guide/authorization/",
	},
	{
		// A classic OAuth app: tokens do not expire. GitHub Apps are "github-app".
		Name: "github", Title: "GitHub",
		AuthURL: endpoints.GitHub.AuthURL, TokenURL: endpoints.GitHub.TokenURL,
		DefaultScopes: []string{"read:user"},
		PKCE:          true, Refresh: RefreshNonExpiring,
		Docs: "https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps",
	},
	{
		// User tokens of a GitHub App: 8 h, refresh token 6 months, single use.
		// Permissions come from the app, not from scopes.
		Name: "github-app", Title: "GitHub App",
		AuthURL: endpoints.GitHub.AuthURL, TokenURL: endpoints.GitHub.TokenURL,
		PKCE: true, Refresh: RefreshRotating,
		Docs: "https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-user-access-token-for-a-github-app",
	},
	{
		Name: "gitlab", Title: "GitLab",
		AuthURL: endpoints.GitLab.AuthURL, TokenURL: endpoints.GitLab.TokenURL,
		RevocationURL: "https://gitlab.com/oauth/revoke",
		DefaultScopes: []string{"read_user"},
		PKCE:          true, Refresh: RefreshRotating,
		Docs: "https://docs.gitlab.com/api/oauth2/",
	},
	{
		Name: "gmail", Title: "Gmail",
		AuthURL: endpoints.Google.AuthURL, TokenURL: endpoints.Google.TokenURL,
		RevocationURL: "https://oauth2.googleapis.com/revoke",
		DefaultScopes: []string{"openid", "email", "https://www.googleapis.com/auth/gmail.readonly"},
		PKCE:          true, AuthParams: googleOffline, Refresh: RefreshNonRotating, AuthStyle: oauth2.AuthStyleInParams, ScopeAliases: googleScopes,
		Docs: "https://developers.google.com/workspace/gmail/api/auth/scopes",
	},
	{
		// Google does not rotate but caps live refresh tokens per client and
		// user, and expires them after 6 months unused. The Google entries
		// authenticate in the form, as golang.org/x/oauth2/google.Endpoint.
		Name: "google", Title: "Google",
		AuthURL: endpoints.Google.AuthURL, TokenURL: endpoints.Google.TokenURL,
		RevocationURL: "https://oauth2.googleapis.com/revoke",
		DefaultScopes: []string{"openid", "email"},
		PKCE:          true, AuthParams: googleOffline, Refresh: RefreshNonRotating, AuthStyle: oauth2.AuthStyleInParams, ScopeAliases: googleScopes,
		Docs: "https://developers.google.com/identity/protocols/oauth2/web-server",
	},
	{
		Name: "google-calendar", Title: "Google Calendar",
		AuthURL: endpoints.Google.AuthURL, TokenURL: endpoints.Google.TokenURL,
		RevocationURL: "https://oauth2.googleapis.com/revoke",
		DefaultScopes: []string{"openid", "email", "https://www.googleapis.com/auth/calendar.readonly"},
		PKCE:          true, AuthParams: googleOffline, Refresh: RefreshNonRotating, AuthStyle: oauth2.AuthStyleInParams, ScopeAliases: googleScopes,
		Docs: "https://developers.google.com/workspace/calendar/api/auth",
	},
	{
		Name: "google-drive", Title: "Google Drive",
		AuthURL: endpoints.Google.AuthURL, TokenURL: endpoints.Google.TokenURL,
		RevocationURL: "https://oauth2.googleapis.com/revoke",
		DefaultScopes: []string{"openid", "email", "https://www.googleapis.com/auth/drive.file"},
		PKCE:          true, AuthParams: googleOffline, Refresh: RefreshNonRotating, AuthStyle: oauth2.AuthStyleInParams, ScopeAliases: googleScopes,
		Docs: "https://developers.google.com/workspace/drive/api/guides/api-specific-auth",
	},
	{
		// Gusto scopes are fixed on the application; refresh tokens are single use.
		Name: "gusto", Title: "Gusto",
		AuthURL: "https://api.gusto.com/oauth/authorize", TokenURL: "https://api.gusto.com/oauth/token",
		Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://docs.gusto.com/app-integrations/docs/authentication",
	},
	{
		Name: "heroku", Title: "Heroku",
		AuthURL: endpoints.Heroku.AuthURL, TokenURL: endpoints.Heroku.TokenURL,
		DefaultScopes: []string{"identity"},
		Refresh:       RefreshNonRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://devcenter.heroku.com/articles/oauth",
	},
	{
		Name: "hubspot", Title: "HubSpot",
		AuthURL: "https://app.hubspot.com/oauth/authorize", TokenURL: "https://api.hubapi.com/oauth/v1/token",
		DefaultScopes: []string{"oauth"},
		Refresh:       RefreshNonRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developers.hubspot.com/docs/api/oauth-quickstart-guide",
	},
	{
		// Intercom tokens do not expire; permissions are set on the app.
		Name: "intercom", Title: "Intercom",
		AuthURL: "https://app.intercom.com/oauth", TokenURL: "https://api.intercom.io/auth/eagle/token",
		Refresh: RefreshNonExpiring, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developers.intercom.com/docs/build-an-integration/learn-more/authentication/setting-up-oauth",
	},
	{
		Name: "jira", Title: "Jira",
		AuthURL: "https://auth.atlassian.com/authorize", TokenURL: "https://auth.atlassian.com/oauth/token",
		DefaultScopes: []string{"offline_access", "read:jira-user", "read:jira-work"},
		AuthParams:    atlassianParams, Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/",
	},
	{
		// Linear's revoke endpoint takes the token as a bearer credential,
		// not RFC 7009. Apps created from October 2025 get refresh tokens.
		Name: "linear", Title: "Linear",
		AuthURL: "https://linear.app/oauth/authorize", TokenURL: "https://api.linear.app/oauth/token",
		DefaultScopes: []string{"read"}, ScopeSeparator: ",",
		PKCE: true, Refresh: RefreshRotating,
		Docs: "https://linear.app/developers/oauth-2-0-authentication",
	},
	{
		// Refresh tokens only for approved partners; access tokens last 60 days.
		Name: "linkedin", Title: "LinkedIn",
		AuthURL: endpoints.LinkedIn.AuthURL, TokenURL: endpoints.LinkedIn.TokenURL,
		RevocationURL: "https://www.linkedin.com/oauth/v2/revoke",
		DefaultScopes: []string{"openid", "profile", "email"},
		Refresh:       RefreshNonRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://learn.microsoft.com/en-us/linkedin/shared/authentication/authorization-code-flow",
	},
	{
		// Mailchimp tokens do not expire and have no scopes.
		Name: "mailchimp", Title: "Mailchimp",
		AuthURL: endpoints.Mailchimp.AuthURL, TokenURL: endpoints.Mailchimp.TokenURL,
		Refresh: RefreshNonExpiring, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://mailchimp.com/developer/marketing/guides/access-user-data-oauth-2/",
	},
	{
		// The Microsoft identity platform (work, school and personal
		// accounts). It replaces the refresh token on each use without
		// revoking the old one, and has no RFC 7009 endpoint.
		Name: "microsoft", Title: "Microsoft",
		AuthURL: microsoft.AuthURL, TokenURL: microsoft.TokenURL,
		DefaultScopes: []string{"openid", "offline_access", "User.Read"},
		PKCE:          true, Refresh: RefreshRotatingGrace,
		Docs: "https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow",
	},
	{
		Name: "miro", Title: "Miro",
		AuthURL: "https://miro.com/oauth/authorize", TokenURL: "https://api.miro.com/v1/oauth/token",
		DefaultScopes: []string{"boards:read"},
		Refresh:       RefreshRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developers.miro.com/docs/getting-started-with-oauth",
	},
	{
		Name: "monday", Title: "monday.com",
		AuthURL: "https://auth.monday.com/oauth2/authorize", TokenURL: "https://auth.monday.com/oauth2/token",
		DefaultScopes: []string{"me:read", "boards:read"},
		Refresh:       RefreshNonExpiring, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developer.monday.com/apps/docs/oauth",
	},
	{
		// Notion has no scopes; capabilities are set on the integration.
		Name: "notion", Title: "Notion",
		AuthURL: "https://api.notion.com/v1/oauth/authorize", TokenURL: "https://api.notion.com/v1/oauth/token",
		AuthParams: map[string]string{"owner": "user"}, Refresh: RefreshNonExpiring, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://developers.notion.com/docs/authorization",
	},
	{
		// The org authorization server (tokens for Okta's own APIs); for a
		// custom authorization server set auth_url and token_url, or
		// discovery_url, in configuration.
		Name: "okta", Title: "Okta",
		AuthURL: "https://{domain}/oauth2/v1/authorize", TokenURL: "https://{domain}/oauth2/v1/token",
		RevocationURL: "https://{domain}/oauth2/v1/revoke",
		DefaultScopes: []string{"openid", "profile", "email", "offline_access"},
		PKCE:          true, Refresh: RefreshRotatingGrace,
		Docs: "https://developer.okta.com/docs/guides/implement-grant-type/authcodepkce/main/",
	},
	{
		// PagerDuty App OAuth ("scoped" or "classic" read/write scopes).
		Name: "pagerduty", Title: "PagerDuty",
		AuthURL: "https://identity.pagerduty.com/oauth/authorize", TokenURL: "https://identity.pagerduty.com/oauth/token",
		DefaultScopes: []string{"read"},
		PKCE:          true, Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developer.pagerduty.com/docs/app-oauth-token",
	},
	{
		// Pipedrive scopes are fixed on the app.
		Name: "pipedrive", Title: "Pipedrive",
		AuthURL: endpoints.Pipedrive.AuthURL, TokenURL: endpoints.Pipedrive.TokenURL,
		RevocationURL: "https://oauth.pipedrive.com/oauth/revoke",
		Refresh:       RefreshNonRotating, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://pipedrive.readme.io/docs/marketplace-oauth-authorization",
	},
	{
		// Intuit's revoke endpoint takes a JSON body, not RFC 7009's form.
		Name: "quickbooks", Title: "QuickBooks",
		AuthURL: "https://appcenter.intuit.com/connect/oauth2", TokenURL: "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
		DefaultScopes: []string{"com.intuit.quickbooks.accounting"},
		Refresh:       RefreshRotating, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://developer.intuit.com/app/developer/qbo/docs/develop/authentication-and-authorization/oauth-2.0",
	},
	{
		Name: "reddit", Title: "Reddit",
		AuthURL: "https://www.reddit.com/api/v1/authorize", TokenURL: "https://www.reddit.com/api/v1/access_token",
		RevocationURL: "https://www.reddit.com/api/v1/revoke_token",
		DefaultScopes: []string{"identity", "read"},
		AuthParams:    map[string]string{"duration": "permanent"}, Refresh: RefreshNonRotating, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://github.com/reddit-archive/reddit/wiki/OAuth2",
	},
	{
		// login.salesforce.com; sandboxes use test.salesforce.com. Refresh
		// token rotation is an option of the connected app, off by default.
		Name: "salesforce", Title: "Salesforce",
		AuthURL: "https://login.salesforce.com/services/oauth2/authorize", TokenURL: "https://login.salesforce.com/services/oauth2/token",
		RevocationURL: "https://login.salesforce.com/services/oauth2/revoke",
		DefaultScopes: []string{"api", "refresh_token"},
		PKCE:          true, Refresh: RefreshNonRotating,
		Docs: "https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_web_server_flow.htm",
	},
	{
		// Offline access tokens, which do not expire.
		Name: "shopify", Title: "Shopify",
		AuthURL: "https://{domain}/admin/oauth/authorize", TokenURL: "https://{domain}/admin/oauth/access_token",
		DefaultScopes: []string{"read_products"}, ScopeSeparator: ",",
		Refresh: RefreshNonExpiring, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/authorization-code-grant",
	},
	{
		// OAuth v2. The scope parameter asks for bot scopes (user scopes go
		// in user_scope). Tokens rotate when the app turns token rotation
		// on (12 h access tokens; the used refresh token dies); without it
		// they never expire. auth.revoke is not RFC 7009.
		Name: "slack", Title: "Slack",
		AuthURL: endpoints.Slack.AuthURL, TokenURL: endpoints.Slack.TokenURL,
		DefaultScopes: []string{"users:read"}, ScopeSeparator: ",",
		Refresh: RefreshRotating,
		Docs:    "https://docs.slack.dev/authentication/installing-with-oauth",
	},
	{
		// Spotify may return a new refresh token on refresh; the old one keeps working.
		Name: "spotify", Title: "Spotify",
		AuthURL: endpoints.Spotify.AuthURL, TokenURL: endpoints.Spotify.TokenURL,
		DefaultScopes: []string{"user-read-email"},
		PKCE:          true, Refresh: RefreshRotatingGrace, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://developer.spotify.com/documentation/web-api/tutorials/code-flow",
	},
	{
		Name: "strava", Title: "Strava",
		AuthURL: endpoints.Strava.AuthURL, TokenURL: endpoints.Strava.TokenURL,
		DefaultScopes: []string{"read"}, ScopeSeparator: ",",
		Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developers.strava.com/docs/authentication/",
	},
	{
		// Stripe Connect OAuth (Standard accounts): the platform's secret key
		// is the client secret; tokens do not expire.
		Name: "stripe", Title: "Stripe",
		AuthURL: "https://connect.stripe.com/oauth/authorize", TokenURL: "https://connect.stripe.com/oauth/token",
		DefaultScopes: []string{"read_only"},
		Refresh:       RefreshNonExpiring, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://docs.stripe.com/connect/oauth-reference",
	},
	{
		Name: "todoist", Title: "Todoist",
		AuthURL: "https://todoist.com/oauth/authorize", TokenURL: "https://todoist.com/oauth/access_token",
		DefaultScopes: []string{"data:read"}, ScopeSeparator: ",",
		Refresh: RefreshNonExpiring, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developer.todoist.com/guides/#oauth",
	},
	{
		Name: "twitch", Title: "Twitch",
		AuthURL: endpoints.Twitch.AuthURL, TokenURL: endpoints.Twitch.TokenURL,
		RevocationURL: "https://id.twitch.tv/oauth2/revoke",
		DefaultScopes: []string{"user:read:email"},
		Refresh:       RefreshNonRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://dev.twitch.tv/docs/authentication/getting-tokens-oauth/",
	},
	{
		Name: "webex", Title: "Webex",
		AuthURL: "https://webexapis.com/v1/authorize", TokenURL: "https://webexapis.com/v1/access_token",
		DefaultScopes: []string{"spark:people_read"},
		PKCE:          true, Refresh: RefreshNonRotating, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developer.webex.com/docs/integrations",
	},
	{
		// X (Twitter) OAuth 2.0: PKCE required, single-use refresh tokens.
		Name: "x", Title: "X",
		AuthURL: endpoints.X.AuthURL, TokenURL: endpoints.X.TokenURL,
		RevocationURL: "https://api.x.com/2/oauth2/revoke",
		DefaultScopes: []string{"tweet.read", "users.read", "offline.access"},
		PKCE:          true, Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://docs.x.com/resources/fundamentals/authentication/oauth-2-0/user-access-token",
	},
	{
		// Xero rotates; the used refresh token stays valid for 30 minutes.
		Name: "xero", Title: "Xero",
		AuthURL: "https://login.xero.com/identity/connect/authorize", TokenURL: "https://identity.xero.com/connect/token",
		RevocationURL: "https://identity.xero.com/connect/revocation",
		DefaultScopes: []string{"openid", "offline_access", "accounting.settings.read"},
		PKCE:          true, Refresh: RefreshRotatingGrace, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://developer.xero.com/documentation/guides/oauth2/auth-flow/",
	},
	{
		Name: "zendesk", Title: "Zendesk",
		AuthURL: "https://{domain}/oauth/authorizations/new", TokenURL: "https://{domain}/oauth/tokens",
		DefaultScopes: []string{"read"},
		PKCE:          true, Refresh: RefreshNonExpiring, AuthStyle: oauth2.AuthStyleInParams,
		Docs: "https://developer.zendesk.com/documentation/ticketing/working-with-oauth/creating-and-using-oauth-tokens-with-the-api/",
	},
	{
		// Zoom scopes are fixed on the app; refresh tokens are single use.
		Name: "zoom", Title: "Zoom",
		AuthURL: endpoints.Zoom.AuthURL, TokenURL: endpoints.Zoom.TokenURL,
		RevocationURL: "https://zoom.us/oauth/revoke",
		PKCE:          true, Refresh: RefreshRotating, AuthStyle: oauth2.AuthStyleInHeader,
		Docs: "https://developers.zoom.us/docs/integrations/oauth/",
	},
}

// paramHelp says what a placeholder of a catalog entry is, keyed by
// "<connection>.<param>".
var paramHelp = map[string]string{
	"auth0.domain":   "your Auth0 tenant domain, e.g. example.us.auth0.com",
	"cognito.domain": "your Cognito user pool domain, e.g. example.auth.us-east-1.amazoncognito.com",
	"okta.domain":    "your Okta domain, e.g. dev-123.okta.com",
	"shopify.domain": "the shop's domain, e.g. example.myshopify.com",
	"zendesk.domain": "your Zendesk domain, e.g. example.zendesk.com",
}

// Catalog returns the built-in connections sorted by name. The result is
// a deep copy the caller may modify.
func Catalog() []Connection {
	out := make([]Connection, len(catalog))
	for i, c := range catalog {
		out[i] = c.clone()
	}
	slices.SortFunc(out, func(a, b Connection) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Lookup returns a deep copy of the built-in connection called name.
func Lookup(name string) (Connection, bool) {
	i := slices.IndexFunc(catalog, func(c Connection) bool { return c.Name == name })
	if i < 0 {
		return Connection{}, false
	}
	return catalog[i].clone(), true
}

func (c Connection) clone() Connection {
	c.DefaultScopes = slices.Clone(c.DefaultScopes)
	c.AuthParams = maps.Clone(c.AuthParams)
	return c
}

// Redacted returns a deep copy of c without its client secret, for
// printing configuration.
func (c Connection) Redacted() Connection {
	c = c.clone()
	c.ClientSecret = ""
	return c
}

var (
	nameRE        = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	placeholderRE = regexp.MustCompile(`\{([A-Za-z0-9_]+)\}`)
	hostValueRE   = regexp.MustCompile(`^[A-Za-z0-9.-]+$`)
)

// Resolve returns c with every {name} placeholder of its URLs replaced by
// params[name]. Values must be host names (letters, digits, '.', '-'),
// without scheme, port or path. It fails with an ErrInvalidConnection
// naming the first missing or malformed parameter.
func (c Connection) Resolve(params map[string]string) (Connection, error) {
	return c.resolve(c.Name, params)
}

// resolve is Resolve with placeholder help taken from the catalog entry
// called help (the provider of a renamed connection).
func (c Connection) resolve(help string, params map[string]string) (Connection, error) {
	c = c.clone()
	for _, u := range []*string{&c.AuthURL, &c.TokenURL, &c.RevocationURL} {
		var err error
		if *u, err = fill(*u, c.Name, help, params); err != nil {
			return Connection{}, err
		}
	}
	return c, nil
}

// fill replaces the {name} placeholders of s for connection conn.
func fill(s, conn, help string, params map[string]string) (string, error) {
	var err error
	s = placeholderRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[1 : len(m)-1]
		v, ok := params[name]
		switch {
		case err != nil:
		case !ok || v == "":
			err = invalidf("connection %q needs params.%s%s", conn, name, helpFor(help, name))
		case !hostValueRE.MatchString(v) || strings.Trim(v, ".-") != v || strings.Contains(v, ".."):
			err = invalidf("connection %q: params.%s %q must be a host name%s, without scheme, port or path", conn, name, v, helpFor(help, name))
		}
		return v
	})
	return s, err
}

func helpFor(conn, param string) string {
	if h, ok := paramHelp[conn+"."+param]; ok {
		return " (" + h + ")"
	}
	return ""
}

// reservedParams are set by the authorization flow itself and may not be
// AuthParams.
var reservedParams = []string{
	"client_id", "client_secret", "code_challenge", "code_challenge_method",
	"redirect_uri", "response_type", "scope", "state",
}

// Validate reports whether c can be used: a name of [a-z0-9][a-z0-9-]*,
// absolute https endpoint URLs (http only for loopback hosts) without
// unresolved placeholders, a known refresh behaviour and auth style, a
// scope separator of " " or ",", no AuthParams the flow sets itself, and
// a client id. Errors wrap ErrInvalidConnection.
func (c Connection) Validate() error {
	if !nameRE.MatchString(c.Name) {
		return invalidf("connection %q: the name must match [a-z0-9][a-z0-9-]*", c.Name)
	}
	for _, u := range []struct {
		field, value string
		optional     bool
	}{{"auth_url", c.AuthURL, false}, {"token_url", c.TokenURL, false}, {"revocation_url", c.RevocationURL, true}} {
		if u.value == "" && u.optional {
			continue
		}
		if err := checkURL(u.value); err != nil {
			return invalidf("connection %q: %s: %v", c.Name, u.field, err)
		}
	}
	if !c.Refresh.Valid() {
		return invalidf("connection %q: refresh %q is not one of %s, %s, %s, %s", c.Name, c.Refresh,
			RefreshRotating, RefreshRotatingGrace, RefreshNonRotating, RefreshNonExpiring)
	}
	switch c.ScopeSeparator {
	case "", " ", ",":
	default:
		return invalidf("connection %q: scope separator %q is not \" \" or \",\"", c.Name, c.ScopeSeparator)
	}
	switch c.AuthStyle {
	case oauth2.AuthStyleAutoDetect, oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader:
	default:
		return invalidf("connection %q: unknown auth style %d", c.Name, c.AuthStyle)
	}
	for k := range c.AuthParams {
		if slices.Contains(reservedParams, k) {
			return invalidf("connection %q: auth_params may not set %q (the flow sets it)", c.Name, k)
		}
	}
	if c.ClientID == "" {
		return invalidf("connection %q: no client id (set client_id, or AGENTAUTH_CONNECTION_%s_CLIENT_ID)", c.Name, envName(c.Name))
	}
	return nil
}

// checkURL accepts absolute https URLs, and http ones for loopback hosts.
func checkURL(s string) error {
	if m := placeholderRE.FindStringSubmatch(s); m != nil {
		return fmt.Errorf("unresolved placeholder %s (set params.%s)", m[0], m[1])
	}
	if s == "" {
		return errors.New("missing")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL", s)
	}
	switch {
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q is not an absolute URL", s)
	case u.User != nil || u.Fragment != "":
		return fmt.Errorf("%q may not have user info or a fragment", s)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	}
	return fmt.Errorf("%q must be https (http only for localhost)", s)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// OAuth2 returns the x/oauth2 configuration of c. Its Scopes are nil
// whatever scopes holds, because x/oauth2 joins them with " ": the
// authorize URL takes them from AuthCodeOptions(scopes), and a refresh
// keeps the granted scopes. Its AuthStyle is ClientAuth: never
// auto-detection.
func (c Connection) OAuth2(redirectURL string, scopes []string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		Endpoint:     oauth2.Endpoint{AuthURL: c.AuthURL, TokenURL: c.TokenURL, AuthStyle: c.ClientAuth()},
		RedirectURL:  redirectURL,
	}
}

// ClientAuth is how the client authenticates at the token and revocation
// endpoints: AuthStyle, or Basic (client_secret_basic, which RFC 6749
// §2.3.1 requires servers to support) when it is unset. It is never
// oauth2.AuthStyleAutoDetect: x/oauth2's auto-detection sends a refused
// request again with the credentials in the form, presenting the same
// refresh token (or code) twice.
func (c Connection) ClientAuth() oauth2.AuthStyle {
	if c.AuthStyle == oauth2.AuthStyleAutoDetect {
		return oauth2.AuthStyleInHeader
	}
	return c.AuthStyle
}

// AuthScopeParam is the value of the authorize request's scope parameter:
// scopes (DefaultScopes when empty) joined by ScopeSeparator.
func (c Connection) AuthScopeParam(scopes []string) string {
	if len(scopes) == 0 {
		scopes = c.DefaultScopes
	}
	sep := c.ScopeSeparator
	if sep == "" {
		sep = " "
	}
	return strings.Join(scopes, sep)
}

// AuthCodeOptions are the options for (*oauth2.Config).AuthCodeURL: the
// scope parameter (omitted when there are no scopes) and AuthParams, in
// key order. PKCE options are the caller's.
func (c Connection) AuthCodeOptions(scopes []string) []oauth2.AuthCodeOption {
	var opts []oauth2.AuthCodeOption
	if s := c.AuthScopeParam(scopes); s != "" {
		opts = append(opts, oauth2.SetAuthURLParam("scope", s))
	}
	for _, k := range slices.Sorted(maps.Keys(c.AuthParams)) {
		opts = append(opts, oauth2.SetAuthURLParam(k, c.AuthParams[k]))
	}
	return opts
}
