// Package kafkaconn turns the kafka section of the configuration into the
// franz-go options with which every Kafka client of the monitor reaches the
// cluster: the group consumer, the changelog, dead-letter, violation-changes and
// violation-events-topic clients, the admin client, replay and simulate. One place
// builds them, so a setting cannot reach one client and miss another.
//
// Credentials are read when a connection authenticates, not once at start:
// a password, token or key mounted from a Kubernetes secret can be rotated
// under a running monitor. Errors name settings and files, never their
// contents.
package kafkaconn

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	promconfig "github.com/prometheus/common/config"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/aws"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/invmon/invmon/internal/config"
)

// tokenTimeout bounds one request to an OAuth token endpoint.
const tokenTimeout = 10 * time.Second

// Options returns the TLS and SASL options for k; nil when both are off. It
// validates the settings and reads every credential once, so that a missing
// file or a malformed certificate fails at start with the setting's name.
func Options(k config.Kafka) ([]kgo.Opt, error) {
	if err := k.ValidateSecurity(); err != nil {
		return nil, err
	}
	var opts []kgo.Opt
	if k.TLS.Enabled {
		tc, err := promconfig.NewTLSConfig(&k.TLS.Config)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls: %w", err)
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if k.SASL.Mechanism != "" {
		mech, err := mechanism(k.SASL)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(mech))
	}
	return opts, nil
}

// mechanism builds the SASL mechanism. Each one resolves its credentials per
// session through a callback; the first resolution happens here.
func mechanism(s config.SASL) (sasl.Mechanism, error) {
	switch s.Mechanism {
	case "PLAIN":
		creds := userPass(s)
		if _, _, err := creds(); err != nil {
			return nil, err
		}
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			u, p, err := creds()
			return plain.Auth{User: u, Pass: p}, err
		}), nil
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		creds := userPass(s)
		if _, _, err := creds(); err != nil {
			return nil, err
		}
		fn := func(context.Context) (scram.Auth, error) {
			u, p, err := creds()
			return scram.Auth{User: u, Pass: p}, err
		}
		if s.Mechanism == "SCRAM-SHA-256" {
			return scram.Sha256(fn), nil
		}
		return scram.Sha512(fn), nil
	case "OAUTHBEARER":
		token, err := oauthToken(s.OAuth)
		if err != nil {
			return nil, err
		}
		if s.OAuth.TokenFile != "" {
			// A file token is checked now; an endpoint is asked at the first
			// connection, where a failure names the broker it was for.
			if _, err := token(context.Background()); err != nil {
				return nil, err
			}
		}
		return oauth.Oauth(func(ctx context.Context) (oauth.Auth, error) {
			t, err := token(ctx)
			return oauth.Auth{Token: t, Extensions: s.OAuth.Extensions}, err
		}), nil
	case "AWS_MSK_IAM":
		creds, err := awsCredentials(s.AWS)
		if err != nil {
			return nil, err
		}
		return aws.ManagedStreamingIAM(creds), nil
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism is not one of %s", strings.Join(config.Mechanisms, ", "))
}

// userPass returns the PLAIN/SCRAM credentials, reading the files each call.
func userPass(s config.SASL) func() (user, pass string, err error) {
	return func() (string, string, error) {
		user, err := valueOrFile("kafka.sasl.username", s.Username, s.UsernameFile)
		if err != nil {
			return "", "", err
		}
		pass, err := valueOrFile("kafka.sasl.password", string(s.Password), s.PasswordFile)
		if err != nil {
			return "", "", err
		}
		return user, pass, nil
	}
}

// valueOrFile returns value, or the content of file without its trailing
// newline (editors and `kubectl create secret --from-file` add one).
func valueOrFile(setting, value, file string) (string, error) {
	if file == "" {
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		// The *PathError names the file and the cause, never the content.
		return "", fmt.Errorf("%s_file: %w", setting, err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("%s_file %s is empty", setting, file)
	}
	return v, nil
}

// oauthToken returns the source of OAUTHBEARER tokens: the token file, read
// at every connection (a projected service-account token is rotated in
// place), or the client-credentials grant, whose token is cached until
// shortly before it expires.
func oauthToken(o config.OAuth) (func(context.Context) (string, error), error) {
	if o.TokenFile != "" {
		return func(context.Context) (string, error) {
			return valueOrFile("kafka.sasl.oauth.token", "", o.TokenFile)
		}, nil
	}
	if _, err := valueOrFile("kafka.sasl.oauth.client_secret", string(o.ClientSecret), o.ClientSecretFile); err != nil {
		return nil, err
	}
	params := map[string][]string{}
	for k, v := range o.EndpointParams {
		params[k] = []string{v}
	}
	var (
		mu     sync.Mutex
		secret string
		src    oauth2.TokenSource
	)
	return func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		s, err := valueOrFile("kafka.sasl.oauth.client_secret", string(o.ClientSecret), o.ClientSecretFile)
		if err != nil {
			return "", err
		}
		// A rotated client secret starts a new token source; otherwise the
		// cached token is reused until it is about to expire.
		if src == nil || s != secret {
			secret = s
			cc := &clientcredentials.Config{
				ClientID: o.ClientID, ClientSecret: s, TokenURL: o.TokenURL,
				Scopes: o.Scopes, EndpointParams: params,
			}
			// The token endpoint is asked with a bounded client: a hung
			// identity provider fails the connection instead of stalling it.
			hc := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Timeout: tokenTimeout})
			src = cc.TokenSource(hc)
		}
		tok, err := src.Token()
		if err != nil {
			return "", fmt.Errorf("kafka.sasl.oauth.token_url %s: %w", o.TokenURL, err)
		}
		return tok.AccessToken, nil
	}, nil
}

// awsCredentials returns the MSK IAM credentials: static ones (files read
// per connection), or the AWS SDK's default chain with its caching and
// refresh.
func awsCredentials(a config.AWS) (func(context.Context) (aws.Auth, error), error) {
	if a.AccessKeyID != "" {
		get := func(context.Context) (aws.Auth, error) {
			secret, err := valueOrFile("kafka.sasl.aws.secret_access_key", string(a.SecretAccessKey), a.SecretAccessKeyFile)
			if err != nil {
				return aws.Auth{}, err
			}
			token, err := valueOrFile("kafka.sasl.aws.session_token", string(a.SessionToken), a.SessionTokenFile)
			if err != nil {
				return aws.Auth{}, err
			}
			return aws.Auth{AccessKey: a.AccessKeyID, SecretKey: secret, SessionToken: token, UserAgent: a.UserAgent}, nil
		}
		if _, err := get(context.Background()); err != nil {
			return nil, err
		}
		return get, nil
	}
	var opts []func(*awsconfig.LoadOptions) error
	if a.Region != "" {
		opts = append(opts, awsconfig.WithRegion(a.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka.sasl.aws: load the AWS SDK configuration: %w", err)
	}
	if cfg.Credentials == nil {
		return nil, errors.New("kafka.sasl.aws: the AWS SDK found no credentials; set access_key_id and secret_access_key_file, or configure the environment")
	}
	return func(ctx context.Context) (aws.Auth, error) {
		c, err := cfg.Credentials.Retrieve(ctx)
		if err != nil {
			return aws.Auth{}, fmt.Errorf("kafka.sasl.aws: retrieve credentials: %w", err)
		}
		return aws.Auth{AccessKey: c.AccessKeyID, SecretKey: c.SecretAccessKey, SessionToken: c.SessionToken, UserAgent: a.UserAgent}, nil
	}, nil
}

// checkTimeout bounds Check when its context has no deadline.
const checkTimeout = 30 * time.Second

// Check connects to the cluster with opts and returns nil once a broker
// answers. Otherwise its error names the seed brokers, the cause as the
// client met it (TLS verification, SASL authentication, refused connection)
// and the setting to look at: a monitor with a wrong password or CA stops at
// start with that message instead of retrying in silence.
func Check(ctx context.Context, brokers []string, opts []kgo.Opt) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, checkTimeout)
		defer cancel()
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	err = cl.Ping(ctx)
	if err == nil {
		return nil
	}
	return fmt.Errorf("kafka broker %s: %w%s", strings.Join(brokers, ","), err, hint(err))
}

// hint names the setting behind the usual failures.
func hint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var saslFailed *kerr.Error
	switch {
	case errors.As(err, &unknownCA):
		return " (the broker's certificate is not signed by a CA of kafka.tls.ca_file, or of the system roots without it)"
	case errors.As(err, &hostname):
		return " (set kafka.tls.server_name to a name the broker's certificate carries)"
	case errors.As(err, &saslFailed) && saslFailed == kerr.SaslAuthenticationFailed:
		return " (check kafka.sasl.username and the password or token)"
	case strings.Contains(err.Error(), "tls: "):
		// Alerts the broker sends, such as a rejected client certificate,
		// reach the client only as text.
		return " (the TLS handshake failed; if the broker requires a client certificate, set kafka.tls.cert_file and key_file to one it trusts)"
	}
	return ""
}
