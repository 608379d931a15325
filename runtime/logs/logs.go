// Package logs stores container output as Docker's json-file log: one JSON
// object per line in a file that is rotated by size, so that `shoal logs`
// reads what `docker logs` would and a chatty container cannot fill the disk.
//
// The writer side runs inside shoal's in-container init, which owns the
// container's stdout and stderr pipes; it therefore uses only the standard
// library, starts no goroutines and encodes without allocating. The reader
// side runs in the agent.
package logs

import (
	"time"
	"unicode/utf8"
)

// Entry is one log record, encoded as Docker's json-file line:
//
//	{"log":"hello\n","stream":"stdout","time":"2026-11-28T01:02:03.123456789Z"}
type Entry struct {
	Log    string    `json:"log"`
	Stream string    `json:"stream"` // "stdout" or "stderr"
	Time   time.Time `json:"time"`
}

// appendEntry appends the json-file line of one entry, newline included. It
// produces the same bytes as encoding/json would for Entry (a test holds it
// to that) without reflection or allocation, because the init process
// encodes every line a container prints.
func appendEntry[S string | []byte](b []byte, log S, stream string, t time.Time) []byte {
	b = append(b, `{"log":`...)
	b = appendString(b, log)
	b = append(b, `,"stream":`...)
	b = appendString(b, stream)
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, "\"}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendString follows encoding/json's string encoding with HTML escaping,
// which is also what Docker writes, so that files stay byte-compatible with
// tools that grep them. Invalid UTF-8 becomes U+FFFD as in encoding/json.
func appendString[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		// Converting at most UTFMax bytes lets the compiler keep the
		// string on the stack for the []byte instantiation.
		n := min(len(s)-i, utf8.UTFMax)
		r, size := utf8.DecodeRuneInString(string(s[i : i+n]))
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
