package extjob

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// object is a decoded JSON object whose fields are checked one by one, so
// that an error can name the field that failed.
type object map[string]json.RawMessage

var errNotObject = errors.New("not a JSON object")

// decodeObject decodes a server line, which must follow FRAME-2.
func decodeObject(b []byte) (object, error) {
	if hasLoneSurrogate(b) {
		return nil, errInvalidJSON
	}
	return decodePayloadObject(b)
}

// decodePayloadObject also accepts lone surrogate escapes, which the
// original's JSON.stringify writes for job data that holds one; they decode
// as U+FFFD (FRAME-2).
func decodePayloadObject(b []byte) (object, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		if !json.Valid(b) {
			return nil, errInvalidJSON
		}
		return nil, errNotObject
	}
	if !utf8.Valid(b) {
		return nil, errInvalidJSON
	}
	var o object
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, errInvalidJSON
	}
	return o, nil
}

var errInvalidJSON = errors.New("not valid JSON")

// hasLoneSurrogate reports whether b, a JSON text, escapes half of a
// surrogate pair without the other half (FRAME-2), which encoding/json would
// quietly turn into U+FFFD.
func hasLoneSurrogate(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		i++ // b[i] is the escaped character; skipping it skips "\\" too
		if b[i] != 'u' {
			continue
		}
		switch u := hex4(b[i+1:]); {
		case u >= 0xDC00 && u <= 0xDFFF:
			return true // a low half with no high half before it
		case u >= 0xD800 && u <= 0xDBFF:
			if len(b) < i+11 || b[i+5] != '\\' || b[i+6] != 'u' {
				return true
			}
			if low := hex4(b[i+7:]); low < 0xDC00 || low > 0xDFFF {
				return true
			}
			i += 10 // past the low half
		}
	}
	return false
}

// hex4 decodes four hex digits, or returns -1.
func hex4(b []byte) int {
	if len(b) < 4 {
		return -1
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 16)
	if err != nil {
		return -1
	}
	return int(n)
}

// has reports whether key is present with a value other than null (MSG-2:
// null means the same as absent).
func (o object) has(key string) bool {
	v, ok := o[key]
	return ok && !bytes.Equal(v, []byte("null"))
}

// str returns the string at key; ok is false when it is absent or not a
// string.
func (o object) str(key string) (s string, ok bool) {
	v, present := o[key]
	if !present || len(v) == 0 || v[0] != '"' {
		return "", false
	}
	return s, json.Unmarshal(v, &s) == nil
}

// integer returns the integer at key; ok is false when it is absent, not a
// number, fractional or out of range.
func (o object) integer(key string) (n int64, ok bool) {
	v, present := o[key]
	if !present {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// strings returns the array of distinct non-empty strings at key.
func (o object) strings(key string) (list []string, ok bool) {
	v, present := o[key]
	if !present || json.Unmarshal(v, &list) != nil || list == nil {
		return nil, false
	}
	seen := make(map[string]bool, len(list))
	for _, s := range list {
		if s == "" || seen[s] {
			return nil, false
		}
		seen[s] = true
	}
	return list, true
}

// runeLen counts characters the way JSON Schema's minLength does.
func runeLen(s string) int { return utf8.RuneCountInString(s) }
