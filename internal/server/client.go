package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/invmon/invmon/internal/violation"
)

// FetchViolations reads every violation that matches query from the API at
// base (http://host:port), following the next cursor page by page.
func FetchViolations(ctx context.Context, client *http.Client, base string, query url.Values) ([]violation.Violation, error) {
	if client == nil {
		client = http.DefaultClient
	}
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("limit", strconv.Itoa(1000))
	var out []violation.Violation
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/violations?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("violations API: %w", err)
		}
		var list ViolationList
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("violations API: %s", resp.Status)
		}
		if err != nil {
			return nil, fmt.Errorf("violations API: %w", err)
		}
		out = append(out, list.Violations...)
		if list.Next == "" {
			return out, nil
		}
		q.Set("next", list.Next)
	}
}
