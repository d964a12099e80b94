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

func decodeObject(b []byte) (object, error) {
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
