package registry

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error codes of the OCI distribution spec (and Docker's TAG_INVALID) that
// a read-only registry can answer with.
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeNameInvalid     = "NAME_INVALID"
	codeTagInvalid      = "TAG_INVALID"
	codeUnsupported     = "UNSUPPORTED"
	codeUnknown         = "UNKNOWN"
)

// apiError is one entry of the spec's error body. Clients such as
// go-containerregistry print "CODE: message", so the message names the
// thing asked for.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError answers with status and the spec's JSON error body,
// {"errors":[{"code":…,"message":…}]}. A HEAD answer has the headers only.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body, _ := json.Marshal(struct {
		Errors []apiError `json:"errors"`
	}{[]apiError{{Code: code, Message: msg}}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}
